"""The tracking store: defaults, reachability, the experiment, the code version.

A step started by `mlflow run` gets its store and experiment from the environment that
`mlflow run` used to create its run; `python -m pipeline` fills in the contract's defaults
(INTERFACE.md) when they are unset. A remote server is checked before any work starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline import config
from pipeline.errors import Unavailable, UserError

# Bounded HTTP retries: MLflow's default retries for minutes against an unreachable server.
# With these, a request fails after 2 retries with 1 s and 2 s back-off (about 3 s plus the
# timeouts), so a server that dies mid-run ends the step in well under a minute.
HTTP_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
HEALTH_TIMEOUT_S = 5  # a server that does not answer /health within this is "unreachable"
# The 3.x UI opens an experiment on its GenAI overview unless this tag says otherwise.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def apply_defaults() -> None:
    """Fill in the contract's tracking defaults where the user set nothing (stdlib only).
    An empty variable counts as unset, as MLflow reads it (a script exporting an unset shell
    variable): an empty MLFLOW_TRACKING_URI was refused as a folder store."""
    defaults = {"MLFLOW_TRACKING_URI": config.default_tracking_uri(), **HTTP_DEFAULTS}
    if not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        defaults["MLFLOW_EXPERIMENT_NAME"] = config.EXPERIMENT_NAME
    for key, value in defaults.items():
        if not os.environ.get(key):
            os.environ[key] = value
    # A new SQLite store logs its schema creation at INFO, before any step's own output.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    path = sqlite_path()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or config.default_tracking_uri()


def sqlite_path(uri: str | None = None) -> Path | None:
    uri = uri or tracking_uri()
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


# The URI schemes MLflow keeps runs in ("" and file: a folder; databases with a driver,
# postgresql+psycopg2); anything else failed deep inside MLflow with a traceback.
TRACKING_SCHEMES = ("", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql")


def check_reachable() -> None:
    """Fail in seconds, naming the URI, when it is not one MLflow stores runs in or a
    remote tracking server does not answer."""
    uri = tracking_uri()
    scheme = urllib.parse.urlparse(uri).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES and not scheme.startswith("databricks"):
        raise UserError(
            f"MLFLOW_TRACKING_URI {uri} is not a store MLflow knows: use http(s)://HOST:PORT,"
            " sqlite:///PATH, postgresql://... or mysql://..."
        )
    if scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise UserError(
            f"MLFLOW_TRACKING_URI {uri} is a folder store, which MLflow 3 refuses"
            " (MLFLOW_ALLOW_FILE_STORE=true opts back in); use sqlite:///PATH instead"
        )
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S).read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unavailable(
            f"tracking server {uri} is unreachable ({reason}); start it with `make server`"
            " or unset MLFLOW_TRACKING_URI to use the embedded store"
        ) from None


_HELD: set[Path] = set()  # the store locks this process holds (flock is not re-entrant)


@contextlib.contextmanager
def store_lock(uri: str | None = None):
    """Serialise first use of an embedded SQLite store (`uri`, default: this process's)
    between processes: two processes creating one store race in MLflow's schema migration
    (../shared/NOTES.md)."""
    path = sqlite_path(uri)
    if path is None or path in _HELD:  # re-entered: this process holds it already
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".mlflow.db.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD.add(path)
        try:
            yield
        finally:
            _HELD.discard(path)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def pipeline_lock():
    """One `main` at a time on an embedded SQLite store: a second one (another terminal)
    fails at once with a "store busy" line instead of racing the first on one database
    file, one Optuna study and one data cache. Server-backed stores need no lock."""
    path = sqlite_path()
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / ".pipeline.lock"
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"store busy: {holder} is running a pipeline on {path}; wait for it to finish,"
                " or give this one a store of its own (FMB_MLRUNS_DIR and MLFLOW_TRACKING_URI)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_OPENED: set[str] = set()  # stores this process has opened (and so created) already


def client(uri: str | None = None):
    """A client on `uri` (default: this process's store); the first one per store is made
    under store_lock, because MlflowClient's constructor creates and migrates a new SQLite
    store. Tests that poll a store a pipeline is creating use it too."""
    import mlflow

    key = uri or tracking_uri()
    if key in _OPENED:
        return mlflow.MlflowClient(tracking_uri=uri)
    with store_lock(key):
        made = mlflow.MlflowClient(tracking_uri=uri)
    _OPENED.add(key)
    return made


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or config.EXPERIMENT_NAME


def ensure_experiment() -> str:
    """The experiment's id (created, with artifacts under mlruns/ for the embedded store, and
    tagged so the UI opens on its runs), also when `mlflow run` created it."""
    return _experiment(
        tracking_uri(), os.environ.get("MLFLOW_EXPERIMENT_ID") or "", experiment_name()
    )


@functools.cache  # once per store and experiment and process: a study asks on every trial
def _experiment(uri: str, experiment_id: str, name: str) -> str:
    with store_lock():
        experiment = _active(experiment_id) if experiment_id else _find_or_create(name)
        experiment_id = experiment.experiment_id
        if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            client().set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    return experiment_id


def _active(experiment_id: str):
    """The experiment MLFLOW_EXPERIMENT_ID names; one line when it is missing or deleted."""
    from mlflow.exceptions import MlflowException

    try:
        experiment = client().get_experiment(experiment_id)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise UserError(
            f"MLFLOW_EXPERIMENT_ID {experiment_id}: no such experiment in {tracking_uri()}"
        ) from None
    return _not_deleted(experiment)


def _not_deleted(experiment):
    # runs cannot be created in a deleted experiment: MLflow said so in a 40-line traceback
    if experiment.lifecycle_stage == "deleted":
        raise UserError(
            f"experiment {experiment.name!r} (id {experiment.experiment_id}) is deleted:"
            f" restore it (`mlflow experiments restore --experiment-id"
            f" {experiment.experiment_id}`) or choose another MLFLOW_EXPERIMENT_NAME"
        )
    return experiment


def _find_or_create(name: str):
    found = client().get_experiment_by_name(name)
    if found is not None:
        return _not_deleted(found)
    location = None
    if sqlite_path() is not None:
        location = (config.mlruns_dir() / "artifacts").resolve().as_uri()
    try:
        created = client().create_experiment(name, artifact_location=location)
    except Exception:  # another process (a server's other client) created it first
        return _not_deleted(client().get_experiment_by_name(name))
    return client().get_experiment(created)


# What "the code" is for reuse: the package and what decides how it runs. Docs, tests and
# profiles can change without invalidating finished runs: a profile only lists jobs, and
# each job is matched with its finished run setting by setting (a copied and edited profile
# reran every job, and split the leaderboard's rows by code version).
CODE_PATHS = ("pipeline", "MLproject", "pyproject.toml", "conda.yaml")


@functools.cache
def code_version() -> str:
    """Commit plus a hash of uncommitted changes to CODE_PATHS: same code, same string.
    Computed once per process (git takes ~0.1 s; a study asks for it on every trial)."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", *args], cwd=config.ROOT, capture_output=True, check=True, timeout=30
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        dirty = git("diff", "HEAD", "--", *CODE_PATHS)
        untracked = git("ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS)
        names = [n for n in untracked.split(b"\0") if n]
    except (OSError, subprocess.SubprocessError):  # not a git checkout: hash the package
        commit, dirty = "nogit", b""
        names = sorted(
            str(p.relative_to(config.ROOT)).encode()
            for p in (config.ROOT / "pipeline").rglob("*.py")
        )
    if not dirty and not names:
        return commit
    digest = hashlib.sha256(dirty)
    for name in names:
        path = config.ROOT / name.decode()
        if path.is_file():
            digest.update(name + b"\0" + path.read_bytes())
    return f"{commit}+{digest.hexdigest()[:12]}"
