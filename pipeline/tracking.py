"""The one place that talks to MLflow: store defaults, step runs, tags, parameters, artifacts.

A step started by `mlflow run` finds its run in `MLFLOW_RUN_ID` and uses it; a step started
as `python -m pipeline` creates its own run in the embedded store (or the server named by
`MLFLOW_TRACKING_URI`). Either way the run ends FINISHED, FAILED or KILLED to match what
happened, so nothing is left RUNNING after an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path

from pipeline import config
from pipeline.cli import UserError

# Bounded HTTP retries: MLflow's default retries for minutes against an unreachable server.
HTTP_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def apply_defaults() -> None:
    """Fill in the contract's tracking defaults where the user set nothing (stdlib only)."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", config.default_tracking_uri())
    if "MLFLOW_EXPERIMENT_ID" not in os.environ:
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", config.EXPERIMENT_NAME)
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # A new SQLite store logs its schema creation at INFO, before any step's own output.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:///"):
        Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///") :]).parent.mkdir(
            parents=True, exist_ok=True
        )


def ensure_experiment() -> str:
    """The experiment's id, created with artifacts under mlruns/ for the embedded store."""
    import mlflow

    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", config.EXPERIMENT_NAME)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (config.mlruns_dir() / "artifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # a parallel worker created it first
        return client.get_experiment_by_name(name).experiment_id


def check_reachable() -> None:
    """Fail in seconds, naming the URI, when a remote tracking server does not answer."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"tracking server {uri} is unreachable ({reason}); start it with `make server`"
            " or unset MLFLOW_TRACKING_URI to use the embedded store"
        ) from None


# What "the code" is for reuse: the package and what decides how it runs. Docs and tests
# can change without invalidating finished runs.
CODE_PATHS = ("pipeline", "MLproject", "pyproject.toml", "conda.yaml", "profiles")


def code_version() -> str:
    """Commit plus a hash of uncommitted changes to CODE_PATHS: same code, same bytes."""

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


def to_jsonable(settings) -> dict:
    data = asdict(settings) if is_dataclass(settings) else dict(settings)
    return json.loads(json.dumps(data, default=str))


def log_params_once(run_id: str, params: dict) -> None:
    """Log parameters the run does not have yet; `mlflow run` has already logged its -P
    values, and logging one again with another spelling ('3' vs '3.0') is an error."""
    import mlflow
    from mlflow.entities import Param

    client = mlflow.MlflowClient()
    existing = client.get_run(run_id).data.params
    fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for start in range(0, len(fresh), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=fresh[start : start + 100])


def run_status(exc: BaseException | None) -> str:
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return "FAILED"


@contextlib.contextmanager
def step_run(
    step: str,
    settings,
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    log_params: bool = True,
    system_metrics: bool = False,
    finished_on: tuple[type[BaseException], ...] = (),
) -> Iterator:
    """Start (or continue) the run of one step; ends it with the status that matches.

    The run handed over by `mlflow run` (MLFLOW_RUN_ID) is used unless `run_id` names
    another (resume) or `parent_run_id` asks for a nested child run. Exceptions listed in
    `finished_on` (a pruned trial) end the run FINISHED and still propagate.
    """
    import mlflow

    check_reachable()
    experiment_id = ensure_experiment()
    if parent_run_id is None and run_id is None:
        run_id = os.environ.get("MLFLOW_RUN_ID") or None
    all_tags = {"pipeline.step": step, "code.version": code_version(), **(tags or {})}
    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=None if run_id else run_name,
        tags=all_tags,
        log_system_metrics=system_metrics or None,
        nested=mlflow.active_run() is not None,
        parent_run_id=parent_run_id if run_id is None else None,
    )
    status = "FINISHED"
    try:
        if log_params:
            log_params_once(run.info.run_id, to_jsonable(settings))
        log_json(to_jsonable(settings), "config.json")
        yield run
    except BaseException as exc:
        status = "FINISHED" if isinstance(exc, finished_on) else run_status(exc)
        if status == "FAILED":
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        raise
    finally:
        mlflow.end_run(status)


def log_json(data, name: str, run_id: str | None = None) -> None:
    """Write JSON to a temp file and log it (works on the active run or a given run)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str))
        if run_id:
            mlflow.MlflowClient().log_artifact(run_id, str(path))
        else:
            mlflow.log_artifact(str(path))


def log_figure(figure, name: str, run_id: str | None = None) -> None:
    """Log a matplotlib figure as PNG and close it (figures hold memory until closed)."""
    import matplotlib.pyplot as plt
    import mlflow

    if run_id:
        mlflow.MlflowClient().log_figure(run_id, figure, name)
    else:
        mlflow.log_figure(figure, name)
    plt.close(figure)


def log_frame(frame, name: str, run_id: str | None = None, index: bool = False) -> None:
    """Log a pandas DataFrame as CSV (or Markdown/HTML by the name's suffix)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if name.endswith(".md"):
            path.write_text(frame.to_markdown(index=index))
        elif name.endswith(".html"):
            path.write_text(frame.to_html(index=index))
        else:
            frame.to_csv(path, index=index)
        if run_id:
            mlflow.MlflowClient().log_artifact(run_id, str(path))
        else:
            mlflow.log_artifact(str(path))


def log_text(text: str, name: str, run_id: str | None = None) -> None:
    import mlflow

    if run_id:
        mlflow.MlflowClient().log_text(run_id, text, name)
    else:
        mlflow.log_text(text, name)
