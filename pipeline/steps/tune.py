"""Search training settings with Optuna on the validation split (one nested MLflow run per
trial, pruning, parallel workers on a shared storage); retrain the best configuration on
fresh seeds and evaluate it on the test split."""

from __future__ import annotations

import sys

from pipeline import cli
from pipeline.config import TuneSettings


def main(settings: TuneSettings) -> int:
    from pipeline import study, tracking

    tracking.apply_defaults()
    result = study.tune(settings)
    best = result["best_val_accuracy"]
    print(
        f"study {result['study']}: {result['n_trials']} trials, best val_accuracy"
        f" {'none' if best is None else f'{best:.4f}'}, {result['seconds']:.0f} s; inspect:"
        f" {result['dashboard']} (then {result['dashboard_url']})",
        file=sys.stderr,
    )
    cli.print_result(result)
    return 0
