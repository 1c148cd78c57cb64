"""Finding runs: finished steps to reuse, the next run to evaluate, the runs to rank."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.tracking.log import timed
from pipeline.tracking.store import client, ensure_experiment

MAX_RESULTS = 50_000


def runs(
    filter_string: str = "",
    order_by: tuple[str, ...] = ("attributes.start_time DESC",),
    max_results: int = MAX_RESULTS,
):
    """Runs of the experiment matching an MLflow filter, newest first."""
    with timed():
        return client().search_runs(
            [ensure_experiment()], filter_string, order_by=list(order_by), max_results=max_results
        )


def runs_frame():
    """Every run of the experiment as a pandas frame (`mlflow.search_runs`), for ranking."""
    import mlflow

    with timed():
        return mlflow.search_runs(
            [ensure_experiment()], output_format="pandas", max_results=MAX_RESULTS
        )


def finished_step_run(
    entry: str, code_version: str, matches: Callable[[dict[str, str]], bool], usable=None
) -> str | None:
    """The newest FINISHED run of an MLproject entry point and code version whose logged
    parameters satisfy `matches` (and for which `usable(run)` holds, when given)."""
    found = runs(
        f"tags.`mlflow.project.entryPoint` = '{entry}' and attributes.status = 'FINISHED'"
        f" and tags.`code.version` = '{code_version}'"
    )
    for run in found:
        if matches(run.data.params) and (usable is None or usable(run)):
            return run.info.run_id
    return None


def latest_train_run() -> str | None:
    """The newest FINISHED train run, evaluated or not (INTERFACE.md: `evaluate`'s default;
    `evaluate --tta flip` right after `evaluate` adds to the same run); None when none."""
    found = runs("tags.`pipeline.step` = 'train' and attributes.status = 'FINISHED'", max_results=1)
    return found[0].info.run_id if found else None
