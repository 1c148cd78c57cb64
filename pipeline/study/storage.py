"""Optuna storages: the default SQLite file, PostgreSQL/MySQL for parallel workers, journal
files; heartbeats, and what happens to a trial whose worker died."""

from __future__ import annotations

import random
import time
import warnings
from importlib.util import find_spec
from pathlib import Path

import optuna

from pipeline import config, tracking
from pipeline.errors import UserError
from pipeline.values import redact

MAX_RETRY = 2  # a trial whose worker died is queued again at most this often


def url(spec: str) -> str:
    """The storage the user means; plain postgresql:// gets the driver that is installed."""
    if spec == "default":
        config.mlruns_dir().mkdir(parents=True, exist_ok=True)
        return config.default_optuna_storage()
    if spec.startswith("postgresql://") and not find_spec("psycopg2") and find_spec("psycopg"):
        return "postgresql+psycopg://" + spec.removeprefix("postgresql://")
    return spec


def is_journal(spec: str) -> bool:
    return spec.startswith("journal:")


def dashboard_arg(spec: str) -> str:
    """What optuna-dashboard takes: the URL, or a journal file's path."""
    shown = redact(url(spec))
    return shown.removeprefix("journal:") if is_journal(shown) else shown


def reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0][:300]) if text else type(exc).__name__


def open_storage(spec: str, heartbeat_s: int, grace_s: int):
    """An Optuna storage; fails in seconds, naming the (redacted) URL, when unusable."""
    target = url(spec)
    try:
        if is_journal(target):
            from optuna.storages.journal import JournalFileBackend

            path = Path(target.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {}
        if target.startswith(("postgresql", "mysql")):
            # connect_timeout: an unreachable server fails now, not after minutes;
            # pre_ping: a connection that idled through a long trial is replaced, not used.
            engine_kwargs = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
        return rdb_storage(
            target,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=grace_s,
            heartbeat_stale_trial_callback=close_and_retry,
        )
    except Exception as exc:
        hint = "a writable file" if is_journal(target) else "a running server and the URL"
        raise UserError(
            f"cannot open Optuna storage {redact(target)}: {reason(exc)}; check {hint}"
        ) from None


def rdb_storage(target: str, attempts: int = 5, **kwargs):
    """RDBStorage, retried while another worker creates the schema of a fresh database:
    concurrent CREATE TABLEs collide (PostgreSQL: duplicate key in pg_type; SQLite: table
    already exists). Connection errors are not retried: they fail at once."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(target, **kwargs)
        except sqlalchemy.exc.DatabaseError as exc:
            collision = isinstance(
                exc, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError
            )
            if attempt == attempts - 1 or not (collision or "already exists" in str(exc)):
                raise
            time.sleep(0.5 + random.random())  # jitter: the workers must not collide again
    raise AssertionError("unreachable")


def close_and_retry(study, trial) -> None:
    """A trial whose worker stopped sending heartbeats (killed): close its trial run FAILED
    and the dead worker's own run KILLED (nothing else ever would: NOTES.md), then queue the
    same parameters again. Optuna calls this from the next worker's `ask`."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:  # the next step on that machine may have closed it KILLED already
        tracking.set_tags(run_id, dead_worker_tags(trial))
    tracking.close_run(run_id, "FAILED")
    tracking.close_run(trial.user_attrs.get("mlflow_worker_run_id"), "KILLED")
    if run_id:
        config.checkpoint_path(run_id).unlink(
            missing_ok=True
        )  # when the dead worker shared mlruns/
    # the retry is a new trial with a run of its own: it must not inherit the dead run's id
    trial.user_attrs = {"retry_of_trial": trial.number}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def dead_worker_tags(trial) -> dict[str, str]:
    return {
        "trial.state": "FAIL",
        "error": f"worker sent no heartbeat for the grace period (killed?); trial {trial.number}"
        f" is queued again unless it was retried {MAX_RETRY} times already",
    }
