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
        saved, run_id, finished = fit.resumed(settings)
        # also for a finished run: another setting beside it was dropped without a word
        check_unchanged(settings, saved)
        if finished:
            print(f"run {run_id} has finished already: nothing to do", file=sys.stderr)
            cli.print_result({"run_id": run_id, "resumed": False})
            return 0
        settings = saved
    job = fit.prepare(settings)  # options, device and data checked before the run starts
    run_id, summary = fit.run(job, run_id=run_id)
    print(
        f"train run {run_id}: best val_accuracy {summary['best_val_accuracy']:.4f}"
        f" after {summary['train_time_s']:.1f} s of training",
        file=sys.stderr,
    )
    cli.print_result({"run_id": run_id, **summary})
    return 0


def check_unchanged(given: TrainSettings, saved: TrainSettings) -> None:
    """A resumed run continues with the settings it was started with (its config.json). A
    setting given beside `resume` that differs from those would be dropped silently, so it
    is an error; one at its default (what `mlflow run` passes) or equal to the run's (what
    `main` passes when it resumes a job) is not."""
    theirs = saved.params()
    changed = [k for k, x in given.non_defaults().items() if k != "resume" and x != theirs[k]]
    if changed:
        raise UserError(
            f"resume continues run {saved.resume} with the settings it was started with;"
            f" drop {', '.join(changed)} (or start a new run)"
        )
