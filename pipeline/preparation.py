"""The prepare job: verify and cache the data (pipeline.data), then log what was prepared
(datasets, manifest, class balance, sample images) into the prepare run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import config, data, plots, tracking
from pipeline.config import PrepareSettings


def prepare(settings: PrepareSettings) -> tuple[data.RawData, Path, dict, bool]:
    """(raw files, cache directory, manifest, reused): verified, split and cached."""
    raw = data.load_raw(data.resolve_source(settings.source), settings.allow_unofficial)
    split = settings.split
    directory, manifest, reused = data.write_cache(raw, split.val_fraction, split.split_seed)
    return raw, directory, manifest, reused


def run_tags(raw: data.RawData) -> dict[str, str]:
    # the folder read: `source=auto` depends on FASHION_MNIST_DIR, so main reuses a prepare
    # run only for the same folder (chain.prepared_usable)
    tags = {"dataset.official": str(raw.official).lower(), "dataset.source": str(raw.source)}
    if not raw.official:
        tags["dataset.unofficial_files"] = ",".join(raw.mismatches)
    return tags


def log_prepared(run_id: str, directory: Path, manifest: dict, reused: bool) -> None:
    """Tags, datasets, class balance and sample images of a prepared cache."""
    tracking.set_tags(
        run_id,
        {"dataset.digest": manifest["digest"], "dataset.cache": "reused" if reused else "written"},
    )
    tracking.log_json(manifest, "manifest.json", run_id)
    splits = {part: data.load_split(directory, part) for part in ("train", "val")}
    # prepare is the one step besides evaluate that reads the test file: it verifies it.
    splits["test"] = data.load_test_split(directory)
    tracking.log_datasets(run_id, splits, manifest["digest"], manifest["source"])
    counts = class_counts(splits)
    tracking.log_table(counts.reset_index(), "class_balance.json", run_id)
    tracking.log_frame(counts, "class_balance.csv", run_id, index=True)
    tracking.log_figure(plots.class_balance_figure(counts), "class_balance.png", run_id)
    tracking.log_metrics(run_id, {f"n_{part}": len(s.labels) for part, s in splits.items()})
    tracking.log_figure(samples_figure(splits["train"]), "samples_per_class.png", run_id)


def class_counts(splits: dict[str, data.Split]):
    import pandas as pd

    counts = pd.DataFrame(
        {part: np.bincount(s.labels, minlength=config.NUM_CLASSES) for part, s in splits.items()},
        index=list(config.CLASS_NAMES),
    )
    counts.index.name = "class"
    return counts


def samples_figure(train: data.Split):
    """Eight training images of each class, one class per row."""
    picks = [i for c in range(config.NUM_CLASSES) for i in np.flatnonzero(train.labels == c)[:8]]
    titles = [config.CLASS_NAMES[train.labels[i]] for i in picks]
    return plots.image_grid_figure(train.images[picks, 0], titles, ncols=8)
