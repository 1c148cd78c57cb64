"""The evaluate job: judge a train run's logged model on the official test split, once, and
write everything into that run.

The model is loaded exactly as a consumer would (`mlflow.pyfunc`), predicts the 10,000 test
images and the validation split once, and the metrics (linked to the logged model and to the
dataset they were computed on), tables and figures go into the train run, so one run holds
a model's training and its test results. Everything that can be wrong with the input (no
such run, not a train run, no model, not the official test set) is checked by `check()`
before any evaluate run starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import config, data, metrics, plots, tracking
from pipeline.errors import UserError

# The largest gap (accuracy points) between the logged model's validation accuracy and the
# accuracy of the epoch whose weights were logged before evaluate flags the run.
VAL_MISMATCH_POINTS = 0.2


@dataclass
class Target:
    """One train run to evaluate, with its data: everything checked, nothing computed."""

    run: object  # the mlflow Run (info, data.tags/params/metrics)
    directory: Path  # the prepared cache it was trained on
    test: data.Split
    official: bool  # the test split is the official one

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def check(run_id: str, allow_unofficial: bool = False) -> Target:
    """The run, its data and the test split, checked; a UserError says what is wrong."""
    run = tracking.get_live_run(run_id)
    step = run.data.tags.get("pipeline.step")
    if step != "train":
        raise UserError(
            f"run {run_id} is a {step or 'non-pipeline'} run, not a train run; pass the id of"
            " a train run (tag pipeline.step=train)"
        )
    if run.info.status != "FINISHED" or "model.uri" not in run.data.tags:
        # resume only where it can work: a run refused before training has no checkpoint
        resume = config.checkpoint_path(run_id).is_file()
        hint = f" or resume it (`python -m pipeline train --resume {run_id}`)" if resume else ""
        raise UserError(
            f"train run {run_id} is {run.info.status} and has no logged model; train it again{hint}"
        )
    directory = cache_of(run)
    test = data.load_test_split(directory)
    official = data.is_official_test(test)
    if not allow_unofficial:
        if not official:
            raise UserError(
                f"the test split in {directory} is not the official Fashion-MNIST test set"
                " (SHA-256 differs); pass allow_unofficial=true to evaluate on it anyway"
            )
        try:
            metrics.check_official_test_split(test.labels)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return Target(run, directory, test, official)


def cache_of(run) -> Path:
    """The prepared cache the run was trained on (prepared again for official data)."""
    config_split = config.SplitSettings.from_params(
        {k: run.data.params[k] for k in ("val_fraction", "split_seed") if k in run.data.params}
    )
    digest = run.data.tags.get("dataset.digest", "")
    found = data.find_cache(digest) if digest else None
    if found is None:  # official data can be prepared again with the run's split settings
        found = data.ensure_prepared(config_split.val_fraction, config_split.split_seed)
        if digest and data.read_manifest(found)["digest"] != digest:
            raise UserError(
                f"the data of run {run.info.run_id} (dataset.digest {digest[:16]}) is not"
                f" prepared in {config.data_dir()}; run prepare on the same files first"
            )
    return found


def predict(model, images: np.ndarray, flip: bool = False) -> np.ndarray:
    """(N, 10) float64 probabilities of a pyfunc model, in batches; `flip` averages in the
    mirrored images' probabilities."""
    parts = []
    for start in range(0, len(images), config.PREDICT_BATCH):
        x = images[start : start + config.PREDICT_BATCH].astype(np.float32)  # (B, 1, 28, 28)
        proba = np.asarray(model.predict(x), dtype=np.float64)
        if flip:
            mirrored = np.ascontiguousarray(x[..., ::-1])
            proba = (proba + np.asarray(model.predict(mirrored), dtype=np.float64)) / 2
        parts.append(proba)
    return np.concatenate(parts) if parts else np.zeros((0, config.NUM_CLASSES))


def own_loss(run, labels: np.ndarray, proba: np.ndarray) -> float:
    """The run's training loss on these predictions (log loss for scikit-learn models)."""
    params = run.data.params
    if params.get("model") in config.SKLEARN_MODEL_NAMES:
        return metrics.training_loss(labels, proba, "nll")
    smoothing = float(params.get("label_smoothing", 0) or 0)
    return metrics.training_loss(labels, proba, params.get("loss", "ce"), smoothing)


def scores(target: Target, model, tta: str) -> tuple[dict, dict, np.ndarray]:
    """(test metrics, validation metrics, test probabilities)."""
    test = target.test
    proba = predict(model, test.images)
    test_values = metrics.classification_metrics(test.labels, proba, "test")
    test_values["test_loss"] = own_loss(target.run, test.labels, proba)
    if tta == "flip":
        flipped_proba = predict(model, test.images, True)
        flipped = metrics.classification_metrics(test.labels, flipped_proba, "test")
        flipped["test_loss"] = own_loss(target.run, test.labels, flipped_proba)
        test_values |= {k.replace("test_", "test_tta_flip_", 1): x for k, x in flipped.items()}
    val = data.load_split(target.directory, "val")
    val_values = metrics.classification_metrics(val.labels, predict(model, val.images), "val")
    # the per-epoch val_accuracy / val_loss series belong to training: never overwrite them
    val_values["val_model_accuracy"] = val_values.pop("val_accuracy")
    return test_values, val_values, proba


def check_val_accuracy(target: Target, val_values: dict) -> str | None:
    """A warning when the logged model does not score on validation what training said the
    logged epoch scored (another precision, weights changed after logging, ...)."""
    expected = target.run.data.metrics.get("logged_val_accuracy")
    if expected is None:
        expected = target.run.data.metrics.get("best_val_accuracy")
    if expected is None:
        return None
    found = val_values["val_model_accuracy"]
    if abs(found - expected) * 100 <= VAL_MISMATCH_POINTS:
        return None
    return (
        f"the logged model scores {found:.4f} on the validation split, training recorded"
        f" {expected:.4f} for the logged weights (more than {VAL_MISMATCH_POINTS} points apart)"
    )


def evaluate(target: Target, tta: str = "none") -> dict[str, float]:
    """Predict a checked target's test and validation splits; log everything into its run."""
    run_id, tags = target.run_id, target.run.data.tags
    model = tracking.load_model(tags["model.uri"])  # once, for every split
    test_values, val_values, proba = scores(target, model, tta)
    digest, model_id = tags.get("dataset.digest", ""), tags.get("model.id")
    splits = {"test": target.test}
    refs = tracking.log_datasets(run_id, splits, digest or "unknown", str(target.directory))
    val_ref = tracking.dataset_ref("val", digest or "unknown")
    for values, ref in ((test_values, refs["test"]), (val_values, val_ref)):
        changed = tracking.changed_metrics(run_id, values)
        tracking.log_metrics(run_id, changed, model_id=model_id, dataset=ref)
    log_artifacts(run_id, target.test.labels, proba, target.test.images)
    warning = check_val_accuracy(target, val_values)
    new_tags = {"evaluated": "true", "test.official": str(target.official).lower()}
    if warning:
        print(f"warning: run {run_id}: {warning}", file=sys.stderr)
        new_tags["evaluation.warning"] = warning
    tracking.set_tags(run_id, new_tags)
    return {**test_values, **val_values}


def log_artifacts(run_id: str, labels: np.ndarray, proba: np.ndarray, images: np.ndarray) -> None:
    predicted = proba.argmax(1)
    cm = metrics.confusion(labels, predicted)
    tracking.log_frame(metrics.confusion_frame(cm), "confusion_matrix.csv", run_id, index=True)
    tracking.log_figure(plots.confusion_matrix_figure(cm), "confusion_matrix.png", run_id)
    report = metrics.classification_report_dict(labels, predicted)
    tracking.log_json(report, "classification_report.json", run_id)
    tracking.log_frame(metrics.predictions_frame(labels, proba), "predictions.csv", run_id)
    tracking.log_frame(metrics.most_confused_pairs(cm), "most_confused_pairs.csv", run_id)
    tracking.log_figure(plots.roc_pr_figure(labels, proba), "roc_pr_curves.png", run_id)
    tracking.log_figure(plots.reliability_figure(labels, proba), "reliability_diagram.png", run_id)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-proba[wrong].max(1), kind="stable")][:32]  # most confident first
    tracking.log_figure(grid(images, labels, proba, wrong), "misclassified.png", run_id)
    first = np.arange(min(32, len(labels)))
    tracking.log_figure(grid(images, labels, proba, first), "sample_predictions.png", run_id)


def grid(images, labels, proba, picks):
    names = config.CLASS_NAMES
    titles = [
        f"{names[labels[i]]} / {names[proba[i].argmax()]} ({proba[i].max():.0%})" for i in picks
    ]
    return plots.image_grid_figure(images[picks, 0], titles, ncols=8)
