"""MLflow runs: one per step, nested child runs, names, tags, parameters, statuses.

A step started by `mlflow run` finds its run in `MLFLOW_RUN_ID` and uses it (naming it, since
`mlflow run` gives random names); `python -m pipeline` creates its own. Either way the run ends
FINISHED, FAILED or KILLED to match what happened, so nothing is left RUNNING after an error.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator

from pipeline import interrupts
from pipeline.errors import Unavailable, UserError
from pipeline.tracking import log
from pipeline.tracking.store import check_reachable, client, code_version, ensure_experiment

HOST, PID = "process.host", "process.pid"  # which process a RUNNING run belongs to


def process_tags() -> dict[str, str]:
    return {HOST: socket.gethostname(), PID: str(os.getpid())}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def close_stale_runs() -> list[str]:
    """End as KILLED the RUNNING runs of this machine whose process is gone (a SIGKILL, a
    power cut: nothing else would ever end them); returns their ids."""
    closed = []
    query = f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{socket.gethostname()}'"
    for run in client().search_runs([ensure_experiment()], query, max_results=1000):
        pid = run.data.tags.get(PID, "")
        if pid.isdigit() and not alive(int(pid)):
            error = (
                f"process {pid} on {socket.gethostname()} ended without ending the run (killed?)"
            )
            close_run(run.info.run_id, "KILLED", {"error": error})
            closed.append(run.info.run_id)
    if closed:
        print(
            f"marked {len(closed)} run(s) of dead processes KILLED: {', '.join(closed)}",
            file=sys.stderr,
        )
    return closed


def run_status(exc: BaseException | None) -> str:
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return "FINISHED"
    # a library may turn the interrupt into its own error: the signal decides
    if isinstance(exc, KeyboardInterrupt) or interrupts.received():
        return "KILLED"
    return "FAILED"


def _check_same_code(run_id: str) -> None:
    """A run is finished by the code that started it: seeds of one configuration are only
    comparable when one code version trained each of them."""
    started_by = client().get_run(run_id).data.tags.get("code.version")
    if started_by and started_by != code_version():
        raise UserError(
            f"run {run_id} was started by code {started_by}, this is {code_version()}; resume"
            " it with that code (git checkout), or start a new run"
        )


@contextlib.contextmanager
def step_run(
    step: str,
    params: dict[str, str],
    *,
    name: str,
    config: dict | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
    finished_on: tuple[type[BaseException], ...] = (),
) -> Iterator[str]:
    """Start (or continue) the run of one step and yield its id; end it with the status
    that matches what happened.

    The run handed over by `mlflow run` (MLFLOW_RUN_ID) is used unless `run_id` names another
    (a resume; a trial's or a retrain's run, made by child_run). `params` are the
    canonical spellings (Settings.params()); `config` the effective settings (config.json).
    Exceptions listed in `finished_on` (a pruned trial) end the run FINISHED and propagate.
    """
    import mlflow

    def active_id() -> str | None:
        return getattr(getattr(mlflow.active_run(), "info", None), "run_id", None)

    before = active_id()
    status, reachable = "FINISHED", True
    try:
        with interrupts.deferred():  # a signal now would leave the new run RUNNING
            run = _start(step, name, tags, run_id, system_metrics)
        log.log_params(run.info.run_id, params)
        if config is not None:
            log.log_json(config, "config.json", run.info.run_id)
        yield run.info.run_id
    except BaseException as exc:
        if active_id() == before:  # _start failed before the run began: nothing to end
            raise
        status = "FINISHED" if isinstance(exc, finished_on) else run_status(exc)
        if server_gone(exc):
            reachable = False
            raise Unavailable(gone_message(run.info.run_id, exc)) from None
        if status == "FAILED":
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        raise
    finally:
        # mlflow.end_run takes the run off its stack before the write that ends it: an
        # interrupt between the two left it RUNNING, so a signal waits until it is ended
        with interrupts.held():
            if active_id() != before:
                if status != "FINISHED" and reachable:
                    with contextlib.suppress(Exception):  # never hides why the run ended
                        fail_pending_models(run.info.run_id, run.info.experiment_id)
                end(status, reachable)


@log.timed()
def _start(step, name, tags, run_id, system_metrics):
    """The step's run, started or continued, tagged with the step, code and process."""
    import mlflow

    check_reachable()
    experiment_id = ensure_experiment()
    close_stale_runs()
    if run_id is None:
        run_id = os.environ.get("MLFLOW_RUN_ID") or None
    if run_id is not None:
        _check_same_code(run_id)
    own = {"pipeline.step": step, "code.version": code_version(), **process_tags()}
    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=None if run_id else name,
        tags={**own, **(tags or {})},
        log_system_metrics=system_metrics or None,
        nested=mlflow.active_run() is not None,
    )
    if run_id is not None:  # `mlflow run` names its runs adjective-animal-123; a resume
        mlflow.set_tags({"mlflow.runName": name, **process_tags()})  # has a new process
        error_to_previous(run)
    return run


def error_to_previous(run) -> None:
    """A run that goes on, or whose work was completed, is no longer in error: its `error`
    tag (why the last attempt ended) becomes `previous_error`."""
    previous = run.data.tags.get("error")
    if previous:
        client().set_tag(run.info.run_id, "previous_error", previous)
        client().delete_tag(run.info.run_id, "error")


def server_gone(exc: BaseException) -> bool:
    """The tracking server stopped answering (after MLflow's bounded retries)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, requests.exceptions.RequestException):
        return True
    return isinstance(exc, MlflowException) and "API request to" in str(exc)


def gone_message(run_id: str, exc: BaseException) -> str:
    from pipeline.tracking.store import tracking_uri

    reason = str(exc).splitlines()[0][:200]
    return (
        f"tracking server {tracking_uri()} stopped answering during run {run_id} ({reason});"
        f" its checkpoint is kept: once the server is back, continue with `python -m pipeline"
        f" train --resume {run_id}` (HTTP retries: MLFLOW_HTTP_REQUEST_MAX_RETRIES)"
    )


@log.timed()
def end(status: str, reachable: bool) -> None:
    """End the active run. With the server gone that fails too: the run stays unfinished
    there until a resume continues it (or the next step's stale-run check ends it), and the
    step exits with the one line about the server."""
    import mlflow

    try:
        mlflow.end_run(status)
    except Exception:
        if reachable:
            raise


@log.timed()
def child_run(parent_id: str, name: str, tags: dict[str, str]) -> str:
    """A run nested under `parent_id`, which may belong to another process (so not
    `mlflow.start_run(parent_run_id=...)`, which insists on the active run as parent); it
    carries the source, user and git tags a fluent run gets."""
    from mlflow.tracking.context import registry

    experiment_id = client().get_run(parent_id).info.experiment_id
    own = {"mlflow.parentRunId": parent_id, "code.version": code_version(), **process_tags()}
    resolved = registry.resolve_tags({**tags, **own})
    return client().create_run(experiment_id, run_name=name, tags=resolved).info.run_id


QUEUED = "(queued)"  # a project child run's name ends so until its step begins


def project_child_run(parent_id: str, entry: str, params: dict[str, str]) -> str:
    """A child run of `parent_id` for an entry point of this project, tagged as `mlflow run`
    tags the runs it creates (entry point, source type PROJECT, git commit, user) and with
    its parameters logged as `mlflow run` logs its -P values (so a step that refuses them
    still leaves a run that says what it was given), for a job that another process (a Ray
    task) runs in it."""
    from mlflow.utils.git_utils import get_git_commit
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_PROJECT_ENTRY_POINT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
    )

    from pipeline import config

    tags = {
        MLFLOW_PROJECT_ENTRY_POINT: entry,
        MLFLOW_SOURCE_TYPE: "PROJECT",
        MLFLOW_SOURCE_NAME: str(config.ROOT),
        "pipeline.step": entry,
    }
    commit = get_git_commit(str(config.ROOT))
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    run_id = child_run(parent_id, f"{entry} {QUEUED}", tags)
    log.log_params(run_id, params)
    return run_id


@log.timed()
def close_run(run_id: str | None, status: str, tags: dict[str, str] | None = None) -> None:
    """End a run left RUNNING; a tracking error is reported, never fatal."""
    if not run_id:
        return
    try:
        run = client().get_run(run_id)
        if run.info.status != "RUNNING":
            return
        set_tags(run_id, tags or {})
        client().set_terminated(run_id, status)
        fail_pending_models(run_id, run.info.experiment_id)
    except Exception as exc:
        print(f"warning: could not close MLflow run {run_id}: {exc}", file=sys.stderr)


@log.timed()
def finish_continued(run_id: str, tags: dict[str, str]) -> None:
    """End FINISHED a run that ended KILLED or FAILED and whose work another run has since
    completed (a study's parent run, once a re-run of the tune concluded the study); `tags`
    name that run, `previous_status` keeps how it ended. A run still RUNNING, or FINISHED,
    is left as it is."""
    run = client().get_run(run_id)
    if run.info.status not in ("KILLED", "FAILED"):
        return
    error_to_previous(run)
    set_tags(run_id, {**tags, "previous_status": run.info.status})
    client().set_terminated(run_id, "FINISHED")


def fail_pending_models(run_id: str, experiment: str) -> None:
    """Mark FAILED the run's logged models still PENDING: a process stopped while logging
    one left it in the Models tab for good, with no files behind it."""
    from mlflow.entities import LoggedModelStatus

    query = f"source_run_id = '{run_id}'"
    for model in client().search_logged_models([experiment], filter_string=query):
        if model.status == LoggedModelStatus.PENDING:
            client().finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


@log.timed()
def get_run(run_id: str):
    """The run (an mlflow Run: info, data.tags/params/metrics); UserError when missing."""
    try:
        return client().get_run(run_id)
    except Exception:
        raise UserError(
            f"run {run_id} does not exist in {client().tracking_uri}; pass the id of a run"
            " of this store"
        ) from None


@log.timed()
def set_tags(run_id: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client().set_tag(run_id, key, str(value))


def get_live_run(run_id: str):
    """get_run, refusing a deleted run: evaluate and resume write into the run, and MLflow
    refuses writes to a deleted one only once the work is done."""
    run = get_run(run_id)
    if run.info.lifecycle_stage != "active":
        raise UserError(
            f"run {run_id} is deleted; restore it first (`mlflow runs restore --run-id {run_id}`)"
        )
    return run


def live_owner(run) -> str | None:
    """'process P on H' when a RUNNING run's process is still alive on this machine (another
    process is training it); None otherwise."""
    tags = run.data.tags
    pid, host = tags.get(PID, ""), tags.get(HOST)
    mine = host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid()
    if run.info.status == "RUNNING" and mine and alive(int(pid)):
        return f"process {pid} on {host}"
    return None


def is_active(run_id: str) -> bool:
    """The run exists in this store and is not deleted."""
    try:
        return client().get_run(run_id).info.lifecycle_stage == "active"
    except Exception:
        return False


def run_url(run_id: str) -> str:
    """Where the MLflow UI shows the run (`make ui` serves http://127.0.0.1:5000)."""
    from pipeline.tracking.store import tracking_uri

    uri = tracking_uri()
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    experiment = client().get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"
