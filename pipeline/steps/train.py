"""Train one model of the registry on the prepared split, early-stop on validation, log it
to MLflow. The test split is never opened here: only `evaluate` reads it."""

from __future__ import annotations

import sys

from pipeline import cli
from pipeline.config import TrainSettings
from pipeline.errors import UserError


def main(settings: TrainSettings) -> int:
    from pipeline import fit, tracking

    tracking.apply_defaults()
    tracking.check_reachable()
    run_id = None
    if settings.resume:
        # the run continues with the settings it was started with (its config.json); others
        # given beside resume would be dropped silently (defaults: what `mlflow run` passes)
        defaults = TrainSettings().params()
        given = [k for k, x in settings.params().items() if k != "resume" and x != defaults[k]]
        if given:
            raise UserError(
                f"resume continues run {settings.resume} with the settings it was started"
                f" with; drop {', '.join(given)}"
            )
        found = fit.resumed(settings)
        if found is None:
            print(f"run {settings.resume} has finished already: nothing to do", file=sys.stderr)
            cli.print_result({"run_id": settings.resume, "resumed": False})
            return 0
        settings, run_id = found
    job = fit.prepare(settings)  # options, device and data checked before the run starts
    run_id, summary = fit.run(job, run_id=run_id)
    print(
        f"train run {run_id}: best val_accuracy {summary['best_val_accuracy']:.4f}"
        f" after {summary['train_time_s']:.1f} s of training",
        file=sys.stderr,
    )
    cli.print_result({"run_id": run_id, **summary})
    return 0
