"""Steps as child runs: `mlflow run` of this project's own entry points (MLflow's multistep
workflow), from inside the main run."""

from __future__ import annotations

import sys

from pipeline import config
from pipeline.errors import UserError


def run_entry_point(
    entry: str,
    params: dict[str, str],
    env_manager: str,
    experiment_id: str,
    run_id: str | None = None,
) -> str:
    """Run an entry point synchronously as a child of the active run (or continue the run
    `run_id`); returns its run id. MLflow does not forward the env manager to children, so
    it is passed explicitly."""
    import time

    import mlflow

    started_ms = int(time.time() * 1000)
    try:
        submitted = mlflow.projects.run(
            str(config.ROOT),
            entry_point=entry,
            parameters=params,
            env_manager=env_manager,
            experiment_id=experiment_id,
            run_id=run_id,
            synchronous=True,
        )
    except mlflow.exceptions.ExecutionException:
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        try:
            failed = child_since(experiment_id, run_id, started_ms)
        except Exception:  # the store may be what failed: say what is known
            failed = None
        why = failed.data.tags.get("error", "see its log") if failed else "see its log"
        where = f"run {failed.info.run_id}" if failed else "its run"
        raise UserError(f"step {entry} ({shown}) failed in {where}: {why}") from None
    except KeyboardInterrupt:
        killed_not_failed(entry, experiment_id, run_id, started_ms)
        raise
    return submitted.run_id


def child_since(experiment_id: str, run_id: str | None, started_ms: int):
    """The run of the entry point just launched: the one given (a resumed run), or the child
    of the active run that MLflow made since `started_ms`; None when there is none."""
    import mlflow

    parent = mlflow.active_run()
    if run_id:
        return mlflow.MlflowClient().get_run(run_id)
    if parent is None:  # not under main: nothing to search by
        return None
    found = mlflow.MlflowClient().search_runs(
        [experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        f" and attributes.start_time >= {started_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def killed_not_failed(entry: str, experiment_id: str, run_id: str | None, started_ms: int) -> None:
    """On Ctrl-C or SIGTERM, MLflow cancels the child and ends its run FAILED unless the step
    ended it first, which a step stopped while it starts or exits cannot: it was stopped,
    so it ends KILLED, like every other run the signal stopped. The child is the run given
    (a resumed one) or the one MLflow made since `started_ms`; one that its step never
    reached keeps MLflow's random name no more, but says so. Never fatal."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        return
    client = mlflow.MlflowClient()
    try:
        run = child_since(experiment_id, run_id, started_ms)
        if run is None:
            return
        if run.info.status == "FAILED":
            client.set_terminated(run.info.run_id, "KILLED")
        if "pipeline.step" not in run.data.tags:
            client.set_tag(run.info.run_id, "mlflow.runName", f"{entry} (stopped at start)")
    except Exception as exc:  # the store may be what went away
        print(f"warning: could not mark the interrupted step KILLED: {exc}", file=sys.stderr)
