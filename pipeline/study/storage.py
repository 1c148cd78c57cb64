"""Optuna storages: the default SQLite file, PostgreSQL/MySQL for parallel workers, journal
files; heartbeats, and what happens to a trial whose worker died."""

from __future__ import annotations

import copy
import random
import time
import warnings
from importlib.util import find_spec
from pathlib import Path

import optuna

from pipeline import config, files, tracking
from pipeline.errors import Unavailable, UserError
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
        if target.startswith(config.SERVER_STORAGES):
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
        raise (Unavailable if unanswered(target, exc) else UserError)(
            f"cannot open Optuna storage {redact(target)}: {reason(exc)}; check {hint}"
        ) from None


def unanswered(target: str, exc: Exception) -> bool:
    """A database server that did not answer (refused, timed out) may on a retry (exit 3,
    retried on Ray); a missing driver or a malformed URL never will (exit 2, bad input)."""
    import sqlalchemy.exc

    server = target.startswith(config.SERVER_STORAGES)
    return server and isinstance(exc, sqlalchemy.exc.OperationalError | OSError)


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
    if run_id:  # when the dead worker shared mlruns/ (it may have died inside a write)
        files.discard(config.checkpoint_path(run_id))
    queue_again(study, trial)


def queue_again(study, trial) -> None:
    """Queue a stopped trial's parameters again: a new WAITING trial, which the next `ask`
    takes first (Optuna's retry callback; its system attributes, the default trial's
    `fixed_params` among them, go with it). The retry runs in a run of its own: it must
    not inherit the stopped trial's run ids."""
    trial.user_attrs = {"retry_of_trial": trial.number}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def fail_orphaned_trials(study) -> int:
    """Fail the RUNNING trials whose worker's run has ended, then close and queue them again
    as close_and_retry does; returns how many. A worker killed on this machine has its run
    closed KILLED when the next step starts here (tracking.close_stale_runs). Heartbeats
    find dead workers on RDB storages only: on a journal file such a trial stayed RUNNING
    for ever, counted against n_trials, and no rerun could complete the study."""
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("mlflow_worker_run_id")
        try:
            if not worker or tracking.get_run(worker).info.status == "RUNNING":
                continue  # alive, or on another machine: heartbeats (if any) decide
        except UserError:  # not in this store: nothing to go by
            continue
        try:  # of two workers doing this at once, one fails the trial
            if study._storage.set_trial_state_values(
                trial._trial_id, state=optuna.trial.TrialState.FAIL
            ):
                stale.append(trial._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    for trial_id in stale:
        close_and_retry(study, copy.deepcopy(study._storage.get_trial(trial_id)))
    return len(stale)


def dead_worker_tags(trial) -> dict[str, str]:
    return {
        "trial.state": "FAIL",
        "error": "its worker died (no heartbeat for the grace period, or its run ended"
        f" KILLED); trial {trial.number} is queued again unless it was retried {MAX_RETRY}"
        " times already",
    }
