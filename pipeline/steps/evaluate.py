"""Evaluate train runs' logged models on the official test split; every metric, table and
figure goes into those runs, and the evaluate run records which runs it evaluated."""

from __future__ import annotations

import sys

from pipeline import cli
from pipeline.config import EvaluateSettings


def main(settings: EvaluateSettings) -> int:
    from pipeline import evaluation, identity, tracking
    from pipeline.errors import UserError

    tracking.apply_defaults()
    tracking.check_reachable()
    ids = settings.run_id.split(",")
    if settings.run_id == "latest":
        latest = tracking.latest_train_run()
        if latest is None:
            raise UserError("no finished train run in this experiment; pass run_id")
        ids = [latest]
    # every run and its data are checked before the evaluate run starts
    targets = [evaluation.check(i, settings.allow_unofficial) for i in ids]
    models = [t.run.data.tags.get("model", "?") for t in targets]
    tags = {
        "evaluated_run_id": ",".join(ids),
        "dataset.digest": ",".join(
            sorted({t.run.data.tags.get("dataset.digest", "") for t in targets})
        ),
    }
    name = identity.evaluate_run_name(models)
    results = {}
    with tracking.step_run(
        "evaluate", settings.params(), name=name, config=settings.to_dict(), tags=tags
    ) as own:
        for target in targets:
            values = evaluation.evaluate(target, settings.tta)
            tracking.set_tags(target.run_id, {"evaluated_by": own})
            results[target.run_id] = values["test_accuracy"]
            print(
                f"evaluated {target.run_id}: test_accuracy {values['test_accuracy']:.4f}",
                file=sys.stderr,
            )
    cli.print_result({"run_id": own, "test_accuracy": results})
    return 0
