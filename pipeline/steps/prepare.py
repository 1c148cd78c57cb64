"""Verify the real Fashion-MNIST (gzip or plain IDX) against the official SHA-256 digests,
make a seeded stratified train/val split and cache it under data/."""

from __future__ import annotations

import sys

from pipeline import cli
from pipeline.config import PrepareSettings


def main(settings: PrepareSettings) -> int:
    from pipeline import preparation, tracking

    tracking.apply_defaults()
    tracking.check_reachable()
    # verified and written before the run starts: bad files are one line and no run
    raw, directory, manifest, reused = preparation.prepare(settings)
    name = f"prepare split_seed={settings.split.split_seed}"
    with tracking.step_run(
        "prepare",
        settings.params(),
        name=name,
        config=settings.to_dict(),
        tags=preparation.run_tags(raw),
    ) as run_id:
        preparation.log_prepared(run_id, directory, manifest, reused)
    print(
        f"prepared {manifest['sizes']} from {manifest['source']} into {directory}", file=sys.stderr
    )
    cli.print_result({"run_id": run_id, "digest": manifest["digest"], "cache": str(directory)})
    return 0
