"""`prepare`: find, verify and split Fashion-MNIST, write the cache, log the dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import cli, config

DESCRIPTION = (
    "Load the real Fashion-MNIST (gzip or plain IDX), verify it against the official "
    "SHA-256 digests, make a seeded stratified train/val split and cache it under data/."
)


def source_arg(text: str) -> str:
    if text in ("auto", "download"):
        return text
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(
            f"source {text!r} is not a directory; give the folder holding the four IDX files,"
            " 'auto' or 'download'"
        )
    return str(Path(text).expanduser().resolve())


def add_split_args(parser: argparse.ArgumentParser, seed_flag: str = "--seed") -> None:
    """The split settings, shared by prepare and by the steps that prepare on demand."""
    parser.add_argument(
        "--val_fraction",
        "--val-fraction",
        dest="val_fraction",
        default=0.1,
        type=cli.float_in(0, 1, "val_fraction", low_open=True, high_open=True),
        help="share of the 60,000 training images held out for validation, in (0, 1)",
    )
    parser.add_argument(
        seed_flag,
        dest="split_seed" if seed_flag != "--seed" else "seed",
        default=42,
        type=cli.int_at_least(0, seed_flag.lstrip("-")),
        help="seed of the stratified train/val split",
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("prepare", DESCRIPTION)
    parser.add_argument(
        "--source",
        default="auto",
        type=source_arg,
        help="a directory with the IDX files; 'auto': FASHION_MNIST_DIR, else "
        f"{config.DEBIAN_DATA_DIR}, else download; 'download': torchvision into data/",
    )
    add_split_args(parser)
    parser.add_argument(
        "--allow_unofficial",
        "--allow-unofficial",
        default=False,
        type=cli.boolean("allow_unofficial"),
        help="accept files whose decoded SHA-256 differs from the official dataset (true/false)",
    )
    return parser


def settings(args: argparse.Namespace) -> config.PrepareConfig:
    return config.PrepareConfig(args.source, args.val_fraction, args.seed, args.allow_unofficial)


def prepare(cfg: config.PrepareConfig, log: bool = True) -> tuple[Path, dict]:
    """Verify and cache the data; with `log`, inside an MLflow run of its own."""
    from pipeline import data, tracking

    try:
        raw = data.load_raw(data.resolve_source(cfg.source), cfg.allow_unofficial)
    except data.DataError as exc:
        raise cli.UserError(str(exc)) from None
    if not log:
        directory, manifest, _ = data.write_cache(raw, cfg.val_fraction, cfg.seed)
        return directory, manifest
    tracking.apply_defaults()
    tags = {"dataset.official": str(raw.official).lower()}
    if not raw.official:
        tags["dataset.unofficial_files"] = ",".join(raw.mismatches)
    with tracking.step_run("prepare", cfg, run_name="prepare", tags=tags):
        directory, manifest, reused = data.write_cache(raw, cfg.val_fraction, cfg.seed)
        log_prepared(directory, manifest, reused)
    return directory, manifest


def log_prepared(directory: Path, manifest: dict, reused: bool) -> None:
    """Tags, datasets, class balance and sample images of a prepared cache."""
    import mlflow
    import numpy as np
    import pandas as pd

    from pipeline import data, plots, tracking

    mlflow.set_tags(
        {"dataset.digest": manifest["digest"], "dataset.cache": "reused" if reused else "written"}
    )
    tracking.log_json(manifest, "manifest.json")
    splits = {part: data.load_split(directory, part) for part in ("train", "val")}
    # prepare is the one step besides evaluate that reads the test file: it verifies it.
    splits["test"] = data.load_test_split(directory)
    for part, split in splits.items():
        dataset = mlflow.data.from_numpy(
            split.images,
            targets=split.labels,
            source=manifest["source"],
            name=f"fashion-mnist-{part}",
            digest=manifest["digest"][:16],
        )
        mlflow.log_input(
            dataset, context={"train": "training", "val": "validation"}.get(part, part)
        )
    counts = pd.DataFrame(
        {part: np.bincount(s.labels, minlength=config.NUM_CLASSES) for part, s in splits.items()},
        index=list(config.CLASS_NAMES),
    )
    counts.index.name = "class"
    mlflow.log_table(counts.reset_index(), "class_balance.json")
    tracking.log_frame(counts, "class_balance.csv", index=True)
    tracking.log_figure(plots.class_balance_figure(counts), "class_balance.png")
    mlflow.log_metrics({f"n_{part}": len(s.labels) for part, s in splits.items()})
    train = splits["train"]
    picks = [i for c in range(config.NUM_CLASSES) for i in np.flatnonzero(train.labels == c)[:8]]
    figure = plots.image_grid_figure(
        train.images[picks, 0], [config.CLASS_NAMES[train.labels[i]] for i in picks], ncols=8
    )
    tracking.log_figure(figure, "samples_per_class.png")


def main(args: argparse.Namespace) -> int:
    cfg = settings(args)
    directory, manifest = prepare(cfg)
    print(f"prepared {manifest['sizes']} from {manifest['source']}")
    print(f"dataset.digest {manifest['digest']}\ncache {directory}")
    return 0
