"""One training job, torch or scikit-learn, from settings to a logged model.

The train step, every tune trial and the retrains of a study's best configuration all call
`run()`: one place wires the engine and the model registry to tracking. Everything that can
be wrong (model options, device, data) is checked by `prepare()` before any run starts.
Per-epoch metrics reach MLflow from the engine's callback, after the epoch's checkpoint is
on disk, so a resumed run never logs an epoch twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import config, data, files, identity, tracking
from pipeline.config import TrainSettings
from pipeline.errors import UserError

EpochHook = Callable[[int, dict], None]  # (epoch, metrics): a pruner's report


@dataclass
class Job:
    """A training job whose settings, model, device and data were all checked."""

    settings: TrainSettings
    model: Any  # torch nn.Module or an unfitted scikit-learn Pipeline, built once
    device: Any  # torch.device; None for scikit-learn
    manifest: dict  # the prepared data's manifest (digest, source, official)
    train: data.Split
    val: data.Split


def build_model(settings: TrainSettings):
    """The model the settings name, initialised from the seed; a bad option or device is a
    UserError. Returns (model, device); device is None for scikit-learn."""
    from pipeline import models

    try:
        if settings.is_sklearn:
            return models.build_baseline(settings.model, settings.seed, **settings.options), None
        from pipeline import engine

        device = engine.select_device(settings.device)
        engine.seed_everything(settings.seed, settings.deterministic)  # seeds the init too
        model = models.build_model(settings.model, dropout=settings.dropout, **settings.options)
        return model, device
    except ValueError as exc:
        raise UserError(str(exc)) from None


def prepare(settings: TrainSettings) -> Job:
    """Check and load everything a run needs; raises UserError before any run starts."""
    settings.check_baseline()
    model, device = build_model(settings)
    split = settings.split
    directory = data.dataset_cache(settings.dataset, split.val_fraction, split.split_seed)
    train, val = data.train_and_val(
        directory, identity.effective_subset(settings), settings.seed, strict=settings.subset > 0
    )
    return Job(settings, model, device, data.read_manifest(directory), train, val)


def resumed(settings: TrainSettings) -> tuple[TrainSettings, str, bool]:
    """For `resume`: the settings the run was started with, its id, and whether it has
    FINISHED already (nothing to do). A UserError when it cannot be resumed."""
    import json
    import os

    run_id = os.environ.get("MLFLOW_RUN_ID") if settings.resume == "true" else settings.resume
    if not run_id:
        raise UserError("resume=true needs `mlflow run --run-id ID`; or pass --resume ID")
    run = tracking.get_live_run(run_id)
    if run.data.tags.get("pipeline.step") != "train":
        raise UserError(f"cannot resume run {run_id}: it is not a train run")
    finished = run.info.status == "FINISHED"
    if not finished:
        owner = tracking.live_owner(run)
        if owner:
            raise UserError(f"cannot resume run {run_id}: {owner} is still training it")
        check_checkpoint(run_id)
    try:
        with tracking.artifact(run_id, "config.json") as path:
            saved = json.loads(path.read_text())
    except Exception:
        raise UserError(f"cannot resume run {run_id}: it has no config.json") from None
    settings = TrainSettings.from_dict(saved).replace(resume=run_id)
    digest = run.data.tags.get("dataset.digest")
    if settings.dataset == "auto" and digest:
        # the data it started on, by digest: "auto" prepares the split again, and another
        # scikit-learn release may draw another one (a new digest) from the same seed
        settings = settings.replace(dataset=digest)
    return settings, run_id, finished


def check_checkpoint(run_id: str) -> None:
    """The run's checkpoint exists and is whole (torch.save writes a zip archive; a CRC check
    of every member catches a truncated or damaged file), before the run is reopened."""
    import zipfile

    path = config.checkpoint_path(run_id)
    if not path.is_file():
        raise UserError(
            f"cannot resume run {run_id}: no checkpoint at {path} (it stopped before its first"
            " epoch ended); train it again as a new run"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile) as exc:
        damaged = str(exc)
    if damaged:
        raise UserError(
            f"cannot resume run {run_id}: its checkpoint {path} is damaged ({damaged}); train"
            " it again as a new run"
        )


def run(
    job: Job,
    *,
    step: str = "train",
    name: str | None = None,
    run_id: str | None = None,
    hook: EpochHook | None = None,
    tags: dict[str, str] | None = None,
    finished_on: tuple[type[BaseException], ...] = (),
) -> tuple[str, dict]:
    """Train the job inside its run (a new one, `run_id`, or the one `mlflow run` made);
    returns (run id, summary). A trial (step="trial") logs no model: only retrains are used."""
    from pipeline.engine import NonFiniteLoss

    s = job.settings
    try:
        with tracking.step_run(
            step,
            s.params(),
            name=name or identity.train_run_name(s),
            config=s.to_dict(),
            tags={**identity.run_tags(s, job.manifest), **(tags or {})},
            run_id=run_id,
            system_metrics=step == "train",
            finished_on=finished_on,
        ) as rid:
            splits = {"train": job.train, "val": job.val}
            # a training subset is a dataset of its own (its size and seed in the name)
            full = job.manifest.get("sizes", {}).get("train")
            sampled = {"train": s.seed} if full and len(job.train.labels) < full else None
            tracking.log_datasets(
                rid, splits, job.manifest["digest"], job.manifest["source"], sampled
            )
            fit = fit_sklearn if s.is_sklearn else fit_torch
            summary = fit(job, rid, hook, log_model=step != "trial")
    except NonFiniteLoss as exc:  # the run is FAILED already; say why in one line
        raise UserError(str(exc)) from None
    return rid, summary


def log_epoch(run_id: str, epoch: int, metrics: dict, hook: EpochHook | None) -> None:
    tracking.log_metrics(run_id, metrics, step=epoch)
    print(
        f"epoch {epoch}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
        file=sys.stderr,
        flush=True,
    )
    if hook is not None:
        hook(epoch, metrics)


# --- torch -------------------------------------------------------------------------------


def fit_torch(job: Job, run_id: str, hook: EpochHook | None, log_model: bool) -> dict:
    from pipeline import engine, models, plots

    s, model, ckpt = job.settings, job.model, config.checkpoint_path(run_id)
    trainer = engine.Trainer(
        model,
        engine.DeviceSplit.from_split(job.train, job.device),
        engine.DeviceSplit.from_split(job.val, job.device),
        s,
        job.device,
        ckpt,
        on_epoch_end=lambda e, m: log_epoch(run_id, e, m, hook),
        compile=engine.resolve_compile(s.compile, job.device, s.model),
    )
    if s.resume and ckpt.is_file():
        trainer.load_checkpoint(ckpt)
        relog_missing_epochs(run_id, trainer.state.history)
        print(f"resumed after epoch {trainer.state.epoch}", file=sys.stderr)
    try:
        result = trainer.fit()
    except engine.NonFiniteLoss:  # a resume would diverge again (it keeps lr): nothing to keep
        files.discard(ckpt)
        raise
    last = result.history["val_accuracy"][-1]
    summary = {
        "best_val_accuracy": result.best_val_accuracy,
        # what the logged weights scored on validation: evaluate checks the logged model
        "logged_val_accuracy": result.best_val_accuracy if s.restore_best else last,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "n_params": models.count_parameters(model),
        "train_time_s": result.train_time_s,
        "compile_time_s": result.compile_time_s,
        # a GPU's untimed first passes (or the compile): not in train_time_s, never hidden
        "warmup_time_s": result.warmup_time_s,
        "stopped_early": int(result.stopped_early),
    }
    tracking.log_metrics(run_id, summary)
    tags = {"compiled": str(trainer.compile).lower(), "precision": trainer.precision}
    tracking.set_tags(run_id, {"device": str(job.device), **tags})
    tracking.log_figure(plots.learning_curves_figure(result.history), "learning_curves.png", run_id)
    tracking.log_text(models.model_summary(model), "model_summary.txt", run_id)
    if log_model:
        log_torch(job, run_id, model)
    files.discard(ckpt)  # the model is logged; checkpoints only serve resumes
    return summary


def relog_missing_epochs(run_id: str, history: dict[str, list[float]]) -> None:
    """Epochs checkpointed but not yet logged (a crash between the two) are logged now."""
    logged = tracking.metric_steps(run_id, "val_accuracy")
    for index in range(len(history.get("val_accuracy", []))):
        if index + 1 not in logged:
            tracking.log_metrics(run_id, {k: v[index] for k, v in history.items()}, step=index + 1)


def log_torch(job: Job, run_id: str, model) -> None:
    """The trained model, in eval mode on the CPU (fp32), with its parameters and family."""
    import copy

    import torch

    cpu = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    s = job.settings
    uri, model_id = tracking.log_torch_model(cpu, job.val.images, s.params(), s.model)
    tracking.set_tags(run_id, {"model.uri": uri, "model.id": model_id})


# --- scikit-learn ------------------------------------------------------------------------


def sklearn_size(estimator) -> int:
    """Learned numbers in a fitted baseline, the closest thing to a parameter count."""
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    if hasattr(final, "calibrated_classifiers_"):  # svc: sigmoid calibration around one SVC
        final = final.calibrated_classifiers_[0].estimator
    if hasattr(final, "coefs_"):
        return int(sum(a.size for a in final.coefs_ + final.intercepts_))
    if hasattr(final, "estimators_"):
        return int(sum(t.tree_.node_count for t in final.estimators_))
    if hasattr(final, "support_vectors_"):
        return int(final.support_vectors_.size + final.dual_coef_.size)
    return int(final.coef_.size + final.intercept_.size)


def model_params(settings: TrainSettings) -> dict[str, str]:
    """The logged model's parameters (the Models tab's columns): a baseline's without the
    torch-only settings, which it never used (`mlflow run` logs their defaults on the run,
    so the run still lists them; a logreg model should not read epochs=10, optimizer=adam)."""
    params = settings.params()
    if settings.is_sklearn:
        params = {k: v for k, v in params.items() if k not in config.TORCH_ONLY}
    return params


def fit_sklearn(job: Job, run_id: str, hook: EpochHook | None, log_model: bool) -> dict:
    from sklearn.metrics import log_loss

    from pipeline.metrics import as_proba

    estimator, train, val = job.model, job.train, job.val
    started = time.perf_counter()
    estimator.fit(train.images.astype(np.float32), train.labels)
    seconds = time.perf_counter() - started
    labels = list(range(config.NUM_CLASSES))
    # float64 rows summing to one, as evaluation scores them: log_loss clips at the eps of
    # the dtype it is given (float32's moved val_loss 0.007 away from val_log_loss for
    # logreg), and warns of float32 rows that miss 1 by ~1e-7 (twice per logreg run)
    train_p = as_proba(estimator.predict_proba(train.images.astype(np.float32)))
    val_p = as_proba(estimator.predict_proba(val.images.astype(np.float32)))
    epoch = {
        "train_loss": log_loss(train.labels, train_p, labels=labels),
        "train_accuracy": float((train_p.argmax(1) == train.labels).mean()),
        "val_loss": log_loss(val.labels, val_p, labels=labels),
        "val_accuracy": float((val_p.argmax(1) == val.labels).mean()),
        "epoch_time_s": seconds,
        "train_images_per_s": len(train.labels) / seconds,
    }
    log_epoch(run_id, 1, epoch, hook)
    summary = {
        "best_val_accuracy": epoch["val_accuracy"],
        "logged_val_accuracy": epoch["val_accuracy"],
        "best_epoch": 1,
        "epochs_run": 1,
        "n_params": sklearn_size(estimator),
        "train_time_s": seconds,
        "stopped_early": 0,
    }
    tracking.log_metrics(run_id, summary)
    tracking.set_tags(run_id, {"device": "cpu", "train.size": str(len(train.labels))})
    if log_model:
        params = model_params(job.settings)
        uri, model_id = tracking.log_sklearn_model(
            estimator, val.images, params, job.settings.model
        )
        tracking.set_tags(run_id, {"model.uri": uri, "model.id": model_id})
    return summary
