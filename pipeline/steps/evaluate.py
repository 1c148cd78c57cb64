"""`evaluate`: judge trained models on the official test split, once, and write it down.

Each logged model is loaded exactly as a consumer would (`mlflow.pyfunc`), predicts the
10,000 test images once, and every metric, table and figure is written into the train run
itself, so one run holds a model's training and its test results. The evaluate run is thin:
it records which runs it evaluated. Several train runs can be evaluated by one evaluate
run (`run_id=ID,ID,...`): the pipeline does that to start Python and MLflow only once.
Everything that can be wrong with the input (no such run, not a train run, no model, not
the official test set) is checked before the evaluate run starts.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from pipeline import cli, config

DESCRIPTION = "Evaluate train runs' logged models on the test split; results go into those runs."
TTA = ("none", "flip")
PREDICT_BATCH = 1000  # images per predict call: bounds activation memory of big models


def run_id_arg(text: str) -> str:
    """`latest`, one MLflow run id, or several separated by commas (normalised, in order)."""
    value = str(text).strip()
    if value.lower() in ("latest", "", "none"):
        return "latest"
    ids = [part.strip().lower() for part in value.split(",") if part.strip()]
    bad = [i for i in ids if not all(c in "0123456789abcdef" for c in i)]
    if bad or not ids:
        raise argparse.ArgumentTypeError(
            f"run_id must be latest or MLflow run ids (hex, comma-separated), got {text!r}"
        )
    return ",".join(dict.fromkeys(ids))


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("evaluate", DESCRIPTION)
    parser.add_argument(
        "--run_id",
        "--run-id",
        default="latest",
        type=run_id_arg,
        help="the train run(s) to evaluate: an id, ids separated by commas, or latest"
        " (the newest finished train run not evaluated yet)",
    )
    parser.add_argument(
        "--tta",
        default="none",
        type=cli.choice(TTA, "tta"),
        help="test-time augmentation, logged under extra test_tta_<name>_ keys (test_accuracy"
        " stays the plain prediction's): none, flip (average with the mirrored images)",
    )
    parser.add_argument(
        "--allow_unofficial",
        "--allow-unofficial",
        default=False,
        type=cli.boolean("allow_unofficial"),
        help="evaluate on a test set that is not the official one (true/false)",
    )
    return parser


# --- which run -------------------------------------------------------------------------


def latest_unevaluated(client, experiment_id: str) -> str:
    runs = client.search_runs(
        [experiment_id],
        "tags.`pipeline.step` = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    for run in runs:
        if run.data.tags.get("evaluated") != "true":
            return run.info.run_id
    raise cli.UserError("no finished, unevaluated train run in this experiment; pass run_id=<id>")


def train_run(client, run_id: str):
    """The train run to evaluate, checked; a UserError says what is wrong with it."""
    try:
        run = client.get_run(run_id)
    except Exception:
        raise cli.UserError(
            f"run {run_id} does not exist in {client.tracking_uri}; pass the id of a train run"
        ) from None
    step = run.data.tags.get("pipeline.step")
    if step != "train":
        raise cli.UserError(
            f"run {run_id} is a {step or 'non-pipeline'} run, not a train run; pass the id of"
            " a train run (tag pipeline.step=train)"
        )
    if run.info.status != "FINISHED" or "model.uri" not in run.data.tags:
        raise cli.UserError(
            f"train run {run_id} is {run.info.status} and has no logged model; train it again"
            f" or resume it (`python -m pipeline train --resume {run_id}`)"
        )
    return run


# --- data ------------------------------------------------------------------------------


def idx_sha256(array: np.ndarray) -> str:
    """SHA-256 of the IDX encoding of a uint8 array: the digest NOTES.md gives per file."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return hashlib.sha256(header + np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()


def official_test_split(directory, allow_unofficial: bool):
    """(test split, official?) of a prepared cache; refused unless it is the official one."""
    from pipeline import data, metrics

    test = data.load_test_split(directory)
    digests = (idx_sha256(test.images[:, 0]), idx_sha256(test.labels.astype(np.uint8)))
    official = (config.OFFICIAL_FILES["test_images"][1], config.OFFICIAL_FILES["test_labels"][1])
    if digests != official and not allow_unofficial:
        raise cli.UserError(
            f"the test split in {directory} is not the official Fashion-MNIST test set"
            " (SHA-256 differs); pass allow_unofficial=true to evaluate on it anyway"
        )
    if not allow_unofficial:
        try:
            metrics.check_official_test_split(test.labels)
        except ValueError as exc:
            raise cli.UserError(str(exc)) from None
    return test, digests == official


def cache_of(run):
    """The prepared cache the run was trained on (prepared again for official data)."""
    from pipeline import data
    from pipeline.steps.train import prepared_cache

    digest = run.data.tags.get("dataset.digest", "")
    found = data.find_cache(digest) if digest else None
    if found is None:  # official data can be prepared again with the run's split settings
        cfg = config.TrainConfig(
            val_fraction=float(run.data.params.get("val_fraction", 0.1)),
            split_seed=int(float(run.data.params.get("split_seed", 42))),
        )
        found = prepared_cache(cfg)
        if digest and data.read_manifest(found)["digest"] != digest:
            raise cli.UserError(
                f"the data of run {run.info.run_id} (dataset.digest {digest[:16]}) is not"
                f" prepared in {config.data_dir()}; run prepare on the same files first"
            )
    return found


@dataclass
class Job:
    """One train run to evaluate, with its data: everything checked, nothing computed."""

    run: object  # mlflow.entities.Run
    directory: object  # the prepared cache (Path)
    test: object  # data.Split of the test images
    official: bool  # the test split is the official one

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def checked_job(client, run_id: str, allow_unofficial: bool) -> Job:
    run = train_run(client, run_id)
    directory = cache_of(run)
    test, official = official_test_split(directory, allow_unofficial)
    return Job(run, directory, test, official)


# --- predictions and what is logged ----------------------------------------------------


def predict(model, images: np.ndarray, flip: bool = False) -> np.ndarray:
    """(N, 10) float64 probabilities of a pyfunc model, in batches; `flip` averages in the
    mirrored images' probabilities."""
    parts = []
    for start in range(0, len(images), PREDICT_BATCH):
        x = images[start : start + PREDICT_BATCH].astype(np.float32)  # (B, 1, 28, 28) raw
        proba = np.asarray(model.predict(x), dtype=np.float64)
        if flip:
            mirrored = np.ascontiguousarray(x[..., ::-1])
            proba = (proba + np.asarray(model.predict(mirrored), dtype=np.float64)) / 2
        parts.append(proba)
    return np.concatenate(parts) if parts else np.zeros((0, config.NUM_CLASSES))


def fresh_metrics(client, run_id: str, values: dict[str, float]) -> dict[str, float]:
    """Only metrics whose value is new: evaluating twice must not grow any history."""
    current = client.get_run(run_id).data.metrics
    return {
        k: v
        for k, v in values.items()
        if not (k in current and (current[k] == v or (math.isnan(v) and math.isnan(current[k]))))
    }


def log_metrics_to(client, run_id: str, values: dict[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in fresh_metrics(client, run_id, values).items()]
    for start in range(0, len(batch), 500):  # MLflow's batch limit is 1000 metrics
        client.log_batch(run_id, metrics=batch[start : start + 500])


def log_artifacts_to(
    run_id: str, labels: np.ndarray, proba: np.ndarray, images: np.ndarray
) -> None:
    from pipeline import metrics, plots, tracking

    predicted = proba.argmax(1)
    cm = metrics.confusion(labels, predicted)
    tracking.log_frame(metrics.confusion_frame(cm), "confusion_matrix.csv", run_id, index=True)
    tracking.log_figure(plots.confusion_matrix_figure(cm), "confusion_matrix.png", run_id)
    tracking.log_json(
        metrics.classification_report_dict(labels, predicted), "classification_report.json", run_id
    )
    tracking.log_frame(metrics.predictions_frame(labels, proba), "predictions.csv", run_id)
    tracking.log_frame(metrics.most_confused_pairs(cm), "most_confused_pairs.csv", run_id)
    tracking.log_figure(plots.roc_pr_figure(labels, proba), "roc_pr_curves.png", run_id)
    tracking.log_figure(plots.reliability_figure(labels, proba), "reliability_diagram.png", run_id)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-proba[wrong].max(1), kind="stable")][:32]  # most confident first
    tracking.log_figure(_grid(images, labels, proba, wrong), "misclassified.png", run_id)
    tracking.log_figure(
        _grid(images, labels, proba, np.arange(min(32, len(labels)))),
        "sample_predictions.png",
        run_id,
    )


def _grid(images, labels, proba, picks):
    from pipeline import plots

    names = config.CLASS_NAMES
    titles = [
        f"{names[labels[i]]} / {names[proba[i].argmax()]} ({proba[i].max():.0%})" for i in picks
    ]
    return plots.image_grid_figure(images[picks, 0], titles, ncols=8)


def evaluate_job(client, job: Job, tta: str = "none") -> dict[str, float]:
    """Predict a checked job's test and validation splits; log everything into its run."""
    import mlflow

    from pipeline import data, metrics

    model = mlflow.pyfunc.load_model(job.run.data.tags["model.uri"])  # once, for every split
    test = job.test
    proba = predict(model, test.images)
    values = metrics.classification_metrics(test.labels, proba, "test")
    val = data.load_split(job.directory, "val")
    val_values = metrics.classification_metrics(val.labels, predict(model, val.images), "val")
    # the per-epoch val_accuracy / val_loss series belong to training: never overwrite them
    values.update({k: v for k, v in val_values.items() if k not in ("val_accuracy", "val_loss")})
    if tta == "flip":
        flipped = metrics.classification_metrics(
            test.labels, predict(model, test.images, flip=True), "test"
        )
        values.update({k.replace("test_", "test_tta_flip_", 1): v for k, v in flipped.items()})
    log_metrics_to(client, job.run_id, values)
    log_artifacts_to(job.run_id, test.labels, proba, test.images)
    client.set_tag(job.run_id, "evaluated", "true")
    client.set_tag(job.run_id, "test.official", str(job.official).lower())
    return values


def evaluate_run(
    run_id: str, tta: str = "none", allow_unofficial: bool = False
) -> dict[str, float]:
    """Evaluate a train run and write the results into it; returns the logged metrics."""
    import mlflow

    client = mlflow.MlflowClient()
    return evaluate_job(client, checked_job(client, run_id, allow_unofficial), tta)


def resolve_ids(client, run_id: str) -> list[str]:
    from pipeline import tracking

    if run_id == "latest":
        return [latest_unevaluated(client, tracking.ensure_experiment())]
    return run_id.split(",")


def main(args: argparse.Namespace) -> int:
    from pipeline import tracking

    tracking.apply_defaults()
    tracking.check_reachable()  # fails in seconds, naming the URI
    import mlflow

    client = mlflow.MlflowClient()
    # every run and its data are checked before the evaluate run starts
    jobs = [checked_job(client, i, args.allow_unofficial) for i in resolve_ids(client, args.run_id)]
    digests = {job.run.data.tags.get("dataset.digest", "") for job in jobs}
    models = sorted({job.run.data.tags.get("model", "?") for job in jobs})
    tags = {
        "evaluated_run_id": ",".join(job.run_id for job in jobs),
        "dataset.digest": ",".join(sorted(digests)),
    }
    name = f"evaluate-{models[0]}" if len(jobs) == 1 else f"evaluate-{len(jobs)}-runs"
    with tracking.step_run("evaluate", vars(args), run_name=name, tags=tags) as own:
        for job in jobs:
            values = evaluate_job(client, job, args.tta)
            client.set_tag(job.run_id, "evaluated_by", own.info.run_id)
            print(
                f"evaluated {job.run_id}: test_accuracy {values['test_accuracy']:.4f}, "
                f"test_f1_macro {values['test_f1_macro']:.4f}",
                flush=True,
            )
    return 0
