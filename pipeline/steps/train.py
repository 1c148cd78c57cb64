"""`train`: fit one registered model on the prepared train split, early-stop on val, log it.

Every value is parsed and checked here before torch is imported. The test split is never
opened by this step: only `evaluate` reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from pipeline import cli, config
from pipeline.steps.prepare import add_split_args

DESCRIPTION = "Train one model of the registry on the prepared split and log it to MLflow."


def dropout_arg(text: str) -> float | None:
    if str(text).strip().lower() in ("default", "none", ""):
        return None
    return cli.float_in(0, 1, "dropout", high_open=True)(text)


def resume_arg(text: str) -> str | None:
    value = str(text).strip()
    if value.lower() in ("false", "no", "0", "", "none"):
        return None
    if value.lower() == "true":
        return "true"
    if not all(c in "0123456789abcdef" for c in value.lower()):
        raise argparse.ArgumentTypeError(f"resume must be true, false or a run id, got {text!r}")
    return value


def add_train_args(parser: argparse.ArgumentParser, tune: bool = False) -> None:
    """Arguments that train and tune share (tune searches over some of them)."""
    add = parser.add_argument
    add(
        "--model",
        default="cnn2",
        type=cli.choice(config.MODEL_NAMES, "model"),
        help=f"registry name: {', '.join(config.MODEL_NAMES)}",
    )
    add(
        "--epochs",
        default=5 if tune else 10,
        type=cli.int_at_least(1, "epochs"),
        help="maximum passes over the training split" + (" per trial" if tune else ""),
    )
    add(
        "--batch_size",
        "--batch-size",
        default=128,
        type=cli.int_at_least(1, "batch_size"),
        help="images per optimizer step",
    )
    add(
        "--subset",
        default=0,
        type=cli.int_at_least(0, "subset"),
        help="0 = the whole training split, else a stratified sample of this many images",
    )
    add(
        "--seed",
        default=42,
        type=cli.int_at_least(0, "seed"),
        help="seed of model init, batch order and augmentation",
    )
    add(
        "--device",
        default="auto",
        type=cli.choice(config.DEVICES, "device"),
        help="auto = cuda, else mps, else cpu",
    )
    add(
        "--dataset",
        default="auto",
        help="dataset.digest (or prefix) of a prepared cache; auto = the official data with the"
        " split settings below, prepared first when missing",
    )
    add_split_args(parser, seed_flag="--split_seed")


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("train", DESCRIPTION)
    add_train_args(parser)
    add = parser.add_argument
    add(
        "--options",
        default={},
        type=cli.key_values("options"),
        help="model variant as key=value,... (e.g. blocks=4 for mini_resnet); none = defaults",
    )
    add(
        "--optimizer",
        default="adam",
        type=cli.choice(config.OPTIMIZERS, "optimizer"),
        help="adam, adamw, sgd (Nesterov momentum 0.9) or rmsprop",
    )
    add(
        "--lr",
        default=1e-3,
        type=cli.float_in(0, 10, "lr", low_open=True),
        help="(peak) learning rate, > 0",
    )
    add(
        "--weight_decay",
        "--weight-decay",
        default=0.0,
        type=cli.float_in(0, 1, "weight_decay"),
        help="L2 penalty (adam, sgd, rmsprop) or decoupled decay (adamw)",
    )
    add(
        "--loss",
        default="ce",
        type=cli.choice(config.LOSSES, "loss"),
        help="ce (cross-entropy), nll (on log-softmax), mse (softmax vs one-hot)",
    )
    add(
        "--flip",
        default=False,
        type=cli.boolean("flip"),
        help="random horizontal flips (true/false)",
    )
    add(
        "--augment",
        default=(),
        type=cli.choices_list(config.AUGMENTATIONS, "augment"),
        help="none, or a comma list of rotate,shift,zoom,shear (batched, on the device)",
    )
    add(
        "--schedule",
        default="none",
        type=cli.choice(config.SCHEDULES, "schedule"),
        help="learning-rate schedule stepped per batch: none, cosine, onecycle",
    )
    add(
        "--label_smoothing",
        "--label-smoothing",
        default=0.0,
        type=cli.float_in(0, 1, "label_smoothing", high_open=True),
        help="ce only; 0 = hard targets",
    )
    add("--dropout", default=None, type=dropout_arg, help="dropout rate; default = the model's own")
    add(
        "--patience",
        default=5,
        type=cli.int_at_least(1, "patience"),
        help="epochs without a val_accuracy gain before early stopping",
    )
    add(
        "--deterministic",
        default=False,
        type=cli.boolean("deterministic"),
        help="deterministic algorithms (slower; exact resume and repeat)",
    )
    add(
        "--resume",
        default=None,
        type=resume_arg,
        help="continue an interrupted run: its run id, or true inside `mlflow run --run-id ID`",
    )
    return parser


def settings(args: argparse.Namespace) -> config.TrainConfig:
    if args.label_smoothing and args.loss != "ce":
        cli.fail("label_smoothing applies to loss=ce only; set label_smoothing=0 or loss=ce")
    return config.TrainConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        loss=args.loss,
        flip=args.flip,
        augment=args.augment,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        dropout=args.dropout,
        patience=args.patience,
        subset=args.subset,
        seed=args.seed,
        deterministic=args.deterministic,
        device=args.device,
        resume=args.resume,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
        model_options=args.options,
        dataset=args.dataset,
    )


# --- data ------------------------------------------------------------------------------


def prepared_cache(cfg: config.TrainConfig) -> Path:
    """The cache to train on; prepared with prepare's code when missing."""
    from pipeline import data
    from pipeline.steps.prepare import prepare

    digest = "" if cfg.dataset == "auto" else cfg.dataset
    found = data.find_cache(digest, cfg.val_fraction, cfg.split_seed)
    if found is not None:
        return found
    if digest:
        raise cli.UserError(f"no prepared data with dataset.digest {digest}; run prepare first")
    print("no prepared data yet: preparing it first", file=sys.stderr)
    directory, _ = prepare(
        config.PrepareConfig(val_fraction=cfg.val_fraction, seed=cfg.split_seed), log=False
    )
    return directory


def effective_subset(cfg: config.TrainConfig) -> int:
    """Training images used: the subset asked for, else a slow baseline's default subset."""
    from pipeline import models

    if cfg.subset or not models.is_sklearn(cfg.model):
        return cfg.subset
    return models.REGISTRY[cfg.model].default_subset


def load_train_val(directory: Path, cfg: config.TrainConfig):
    """(train, val) splits; train reduced to a stratified subset when asked."""
    from pipeline import data

    train, val = data.load_split(directory, "train"), data.load_split(directory, "val")
    size = effective_subset(cfg)
    if size and size < len(train.labels):
        keep = data.stratified_subset(train.labels, size, cfg.seed)
        train = data.Split(train.images[keep], train.labels[keep])
    return train, val


# --- the run ---------------------------------------------------------------------------


def checkpoint_path(run_id: str) -> Path:
    return config.mlruns_dir() / "checkpoints" / f"{run_id}.pt"


def resumed_settings(cfg: config.TrainConfig) -> tuple[config.TrainConfig, str | None]:
    """For a resume, the run to continue and the settings it was started with."""
    if cfg.resume is None:
        return cfg, None
    run_id = os.environ.get("MLFLOW_RUN_ID") if cfg.resume == "true" else cfg.resume
    if not run_id:
        raise cli.UserError("resume=true needs `mlflow run --run-id ID`; or pass --resume ID")
    import mlflow

    try:
        run = mlflow.MlflowClient().get_run(run_id)
        saved = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config.json")
    except Exception:
        raise cli.UserError(
            f"cannot resume run {run_id}: no such train run or no config.json"
        ) from None
    if run.data.tags.get("pipeline.step") != "train":
        raise cli.UserError(f"cannot resume run {run_id}: it is not a train run")
    if not checkpoint_path(run_id).is_file():
        raise cli.UserError(
            f"cannot resume run {run_id}: no checkpoint at {checkpoint_path(run_id)}"
        )
    saved["augment"] = tuple(saved["augment"])
    return replace(config.TrainConfig(**saved), resume=run_id), run_id


# Settings that do not change what is learned: runs differing only in these are one
# configuration (seeds are aggregated over; resume and device do not change the result).
NOT_CONFIGURATION = ("seed", "resume", "device", "deterministic", "dataset")


def config_key(cfg: config.TrainConfig) -> str:
    import hashlib

    from pipeline.tracking import to_jsonable

    settings = {k: v for k, v in to_jsonable(cfg).items() if k not in NOT_CONFIGURATION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def as_option(value) -> str:
    """A model option as typed on the command line: lists as [a,b], booleans lowercase."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(as_option(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def command_line(cfg: config.TrainConfig) -> str:
    """The `python -m pipeline train` command that reproduces this run."""
    from pipeline.tracking import to_jsonable

    defaults, parts = to_jsonable(config.TrainConfig()), ["python -m pipeline train"]
    for key, value in to_jsonable(cfg).items():
        if key == "resume" or (value == defaults[key] and key != "model"):
            continue
        if key == "model_options":
            key, value = (
                "options",
                "'" + ",".join(f"{k}={as_option(v)}" for k, v in value.items()) + "'",
            )
        elif key == "augment":
            value = ",".join(value)
        parts.append(f"--{key} {value}")
    return " ".join(parts)


def run_tags(cfg: config.TrainConfig, manifest: dict) -> dict:
    return {
        "model": cfg.model,
        "dataset.digest": manifest["digest"],
        "dataset.official": str(manifest["official"]).lower(),
        "train.subset": str(effective_subset(cfg)),
        "config.key": config_key(cfg),
        "config.label": describe(cfg),
        "command": command_line(cfg),
        "mlflow.note.content": f"{describe(cfg)}\n\n`{command_line(cfg)}`",
    }


def describe(cfg: config.TrainConfig) -> str:
    """A one-line, human-readable configuration (the leaderboard's label)."""
    options = "".join(f" {k}={as_option(v)}" for k, v in cfg.model_options.items())
    if cfg.model in config.SKLEARN_MODEL_NAMES:  # no epochs, optimizer or augmentation
        return f"{cfg.model}{options} | scikit-learn subset={effective_subset(cfg) or 'all'}"
    aug = ",".join(("flip",) * cfg.flip + cfg.augment) or "none"
    extras = "".join(
        f" {k}={getattr(cfg, k)}"
        for k in ("weight_decay", "schedule", "label_smoothing", "dropout")
        if getattr(cfg, k) not in (0, 0.0, None, "none")
    )
    subset = cfg.subset or "all"
    return (
        f"{cfg.model}{options} | {cfg.optimizer} lr={cfg.lr:g} loss={cfg.loss} aug={aug}{extras}"
        f" epochs={cfg.epochs} batch={cfg.batch_size} subset={subset}"
    )


def check_runtime(cfg: config.TrainConfig):
    """Device and model options, checked before any run is started; returns the device."""
    from pipeline import models

    if models.is_sklearn(cfg.model):
        builder = lambda: models.build_baseline(cfg.model, cfg.seed, **cfg.model_options)  # noqa: E731
    else:
        from pipeline.steps.fitting import build_torch_model

        builder = lambda: build_torch_model(cfg)  # noqa: E731
    try:
        builder()
        if models.is_sklearn(cfg.model):
            return None
        from pipeline import engine

        return engine.select_device(cfg.device)
    except ValueError as exc:
        raise cli.UserError(str(exc)) from None


def train(
    cfg: config.TrainConfig,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    hook=None,
    tags: dict | None = None,
    finished_on: tuple = (),
) -> tuple[str, dict]:
    """One train run. Tune uses it too: for trials (tag pipeline.step=trial, no model
    logged, pruning through `hook`) and for retraining the best configuration."""
    from pipeline import data, models, tracking
    from pipeline.engine import NonFiniteLoss
    from pipeline.steps import fitting

    device = check_runtime(cfg)
    directory = prepared_cache(cfg)
    manifest = data.read_manifest(directory)
    train_split, val = load_train_val(directory, cfg)
    step = (tags or {}).get("pipeline.step", "train")
    try:
        with tracking.step_run(
            step,
            cfg,
            run_id=run_id,
            parent_run_id=parent_run_id,
            run_name=f"{step}-{cfg.model}",
            tags={**run_tags(cfg, manifest), **(tags or {})},
            system_metrics=step == "train",
            finished_on=finished_on,
        ) as run:
            rid = run.info.run_id
            if models.is_sklearn(cfg.model):
                summary = fitting.fit_sklearn(cfg, train_split, val, rid)
            else:
                summary = fitting.fit_torch(
                    cfg,
                    train_split,
                    val,
                    rid,
                    checkpoint_path(rid),
                    device,
                    hook,
                    log_model=step == "train",
                )
    except NonFiniteLoss as exc:  # the run is FAILED already; say why in one line
        raise cli.UserError(str(exc)) from None
    return rid, summary


def main(args: argparse.Namespace) -> int:
    cfg = settings(args)
    from pipeline import tracking

    tracking.apply_defaults()
    cfg, resume_id = resumed_settings(cfg)
    started = time.time()
    run_id, summary = train(cfg, run_id=resume_id)
    print(
        f"train run {run_id}: best val_accuracy {summary['best_val_accuracy']:.4f} "
        f"in {time.time() - started:.1f} s"
    )
    print(json.dumps({"run_id": run_id, **summary}))
    return 0
