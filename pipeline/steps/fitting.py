"""Fit a model and log it: the wiring of engine, models and tracking that train and tune share.

Per-epoch metrics go to MLflow from the engine's callback (after the checkpoint is on disk);
the fitted model is logged so that `mlflow.pyfunc.load_model(uri).predict(x)` maps float32
raw pixels (N, 1, 28, 28) to (N, 10) probabilities, for torch and scikit-learn alike.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.data import Split

EpochHook = Callable[[int, dict], None]


def model_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *config.IMAGE_SHAPE))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.NUM_CLASSES))]),
    )


def input_example(split: Split) -> np.ndarray:
    # Batch of 8, not 1: torch.export fixes a size-1 batch dimension (NOTES.md).
    return split.images[:8].astype(np.float32)


def pinned(*names: str) -> list[str]:
    """Exact requirements of the logged model; inferring them costs ~8 s per run."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_epoch(run_id: str, epoch: int, metrics: dict, hook: EpochHook | None) -> None:
    import mlflow

    mlflow.MlflowClient().log_batch(
        run_id, metrics=[_metric(k, v, epoch) for k, v in metrics.items()]
    )
    print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)
    if hook is not None:
        hook(epoch, metrics)


def _metric(key: str, value: float, step: int):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


# --- torch -----------------------------------------------------------------------------


def build_torch_model(cfg: config.TrainConfig):
    from pipeline import models

    return models.build_model(cfg.model, dropout=cfg.dropout, **cfg.model_options)


def fit_torch(
    cfg,
    train: Split,
    val: Split,
    run_id: str,
    ckpt: Path | None,
    device,
    hook: EpochHook | None = None,
    log_model: bool = True,
) -> dict:
    import mlflow

    from pipeline import engine, models, plots, tracking

    engine.seed_everything(cfg.seed, cfg.deterministic)
    model = build_torch_model(cfg)
    trainer = engine.Trainer(
        model,
        engine.DeviceSplit.from_split(train, device),
        engine.DeviceSplit.from_split(val, device),
        cfg,
        device,
        ckpt,
        on_epoch_end=lambda e, m: log_epoch(run_id, e, m, hook),
    )
    if cfg.resume and ckpt is not None and ckpt.is_file():
        trainer.load_checkpoint(ckpt)
        relog_missing_epochs(run_id, trainer.state.history)
        print(f"resumed after epoch {trainer.state.epoch}", file=sys.stderr)
    result = trainer.fit()
    summary = {
        "best_val_accuracy": result.best_val_accuracy,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "n_params": models.count_parameters(model),
        "train_time_s": result.train_time_s,
        "stopped_early": int(result.stopped_early),
    }
    mlflow.log_metrics(summary)
    mlflow.set_tag("device", str(device))
    tracking.log_figure(plots.learning_curves_figure(result.history), "learning_curves.png")
    tracking.log_text(models.model_summary(model), "model_summary.txt")
    if log_model:  # trials skip it: only the retrained best model is ever used
        log_torch_model(model, val)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)  # the model is logged; checkpoints only serve resumes
    return summary


def relog_missing_epochs(run_id: str, history: dict[str, list[float]]) -> None:
    """Epochs checkpointed but not yet logged (a crash between the two) are logged now."""
    import mlflow

    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_accuracy")}
    for index in range(len(history.get("val_accuracy", []))):
        if index + 1 not in logged:
            metrics = {key: values[index] for key, values in history.items()}
            mlflow.MlflowClient().log_batch(
                run_id, metrics=[_metric(k, v, index + 1) for k, v in metrics.items()]
            )


def log_torch_model(model, val: Split) -> None:
    """Log eval-mode CPU model + softmax as pt2 (pickle with our code as a fallback)."""
    import mlflow
    import torch

    wrapped = torch.nn.Sequential(copy.deepcopy(model).cpu(), torch.nn.Softmax(dim=1))
    wrapped = wrapped.to(memory_format=torch.contiguous_format).eval()
    common = dict(name="model", signature=model_signature(), input_example=input_example(val))
    try:
        info = mlflow.pytorch.log_model(
            wrapped, pip_requirements=pinned("torch", "mlflow", "numpy"), **common
        )
    except Exception as exc:  # torch.export can refuse a layer; pickle always works
        print(f"pt2 export failed ({type(exc).__name__}); logging as pickle", file=sys.stderr)
        info = mlflow.pytorch.log_model(
            wrapped,
            serialization_format="pickle",
            code_paths=[str(config.ROOT / "pipeline")],
            pip_requirements=pinned("torch", "mlflow", "numpy"),
            **common,
        )
    mlflow.set_tag("model.uri", info.model_uri)


# --- scikit-learn ----------------------------------------------------------------------


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


def fit_sklearn(cfg, train: Split, val: Split, run_id: str) -> dict:
    import mlflow
    from sklearn.metrics import log_loss

    from pipeline import models

    estimator = models.build_baseline(cfg.model, cfg.seed, **cfg.model_options)
    started = time.perf_counter()
    estimator.fit(train.images.astype(np.float32), train.labels)
    seconds = time.perf_counter() - started
    labels = list(range(config.NUM_CLASSES))
    train_p = estimator.predict_proba(train.images.astype(np.float32))
    val_p = estimator.predict_proba(val.images.astype(np.float32))
    epoch = {
        "train_loss": log_loss(train.labels, train_p, labels=labels),
        "train_accuracy": float((train_p.argmax(1) == train.labels).mean()),
        "val_loss": log_loss(val.labels, val_p, labels=labels),
        "val_accuracy": float((val_p.argmax(1) == val.labels).mean()),
        "epoch_time_s": seconds,
        "train_images_per_s": len(train.labels) / seconds,
    }
    log_epoch(run_id, 1, epoch, None)
    summary = {
        "best_val_accuracy": epoch["val_accuracy"],
        "best_epoch": 1,
        "epochs_run": 1,
        "n_params": sklearn_size(estimator),
        "train_time_s": seconds,
        "stopped_early": 0,
    }
    mlflow.log_metrics(summary)
    mlflow.set_tags({"device": "cpu", "train.size": str(len(train.labels))})
    info = mlflow.sklearn.log_model(
        estimator,
        name="model",
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        signature=model_signature(),
        input_example=input_example(val),
        pip_requirements=pinned("scikit-learn", "mlflow", "numpy", "cloudpickle"),
    )
    mlflow.set_tag("model.uri", info.model_uri)
    return summary
