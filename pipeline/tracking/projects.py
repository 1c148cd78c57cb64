"""Steps as child runs: `mlflow run` of this project's own entry points (MLflow's multistep
workflow), from inside the main run."""

from __future__ import annotations

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
    import mlflow

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
        raise UserError(f"step {entry} ({shown}) failed; its run says why") from None
    return submitted.run_id
