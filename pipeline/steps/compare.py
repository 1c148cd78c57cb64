"""Build the leaderboard of evaluated train runs (mean ± std over seeds, separate sections
for other data or subsets, significance notes) and register the champion, chosen on the
validation split."""

from __future__ import annotations

import sys

from pipeline import cli
from pipeline.config import CompareSettings


def main(settings: CompareSettings) -> int:
    from pipeline import comparison, tracking

    tracking.apply_defaults()
    tracking.check_reachable()
    recs = comparison.records(settings.metric)  # a metric no run has: no compare run either
    with tracking.step_run(
        "compare", settings.params(), name="compare", config=settings.to_dict()
    ) as run_id:
        result = comparison.compare(run_id, settings.metric, recs)
    lines = result.pop("lines")
    print("\n".join(lines))
    print(
        f"leaderboard: run {run_id}, artifacts leaderboard.md / leaderboard.html", file=sys.stderr
    )
    cli.print_result({"run_id": run_id, **result})
    return 0
