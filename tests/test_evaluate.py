"""The evaluate step: what it writes into train runs, on the real test set, and what it refuses.

Every metric of pipeline.metrics is checked against scikit-learn in test_metrics.py; here the
step is checked on the store the tiny pipeline left (test_pipeline.py runs it once per
session) and, for the unofficial-data refusal, on synthetic data in a store of its own.
"""

from __future__ import annotations

import contextlib
import gzip
import json

import numpy as np
import pandas as pd
import pytest
import test_pipeline as tp
from conftest import run_step
from sklearn.metrics import accuracy_score

from pipeline import cli, config, evaluation

CONTRACT_TEST_KEYS = {
    "test_accuracy",
    "test_loss",
    *(f"test_{m}_{avg}" for m in ("precision", "recall", "f1") for avg in ("macro", "weighted")),
    *(f"test_f1_{key}" for key in config.CLASS_KEYS),
    "val_precision_macro",
    "val_recall_macro",
    "val_f1_macro",
}
TINY_EVALUATED_RUNS = tp.TINY_TRAIN_RUNS + 1  # and the study's retrained best


@contextlib.contextmanager
def tracking_to(uri: str):
    """In-process MLflow calls go to `uri`; afterwards back to the environment's store (the
    global URI would otherwise outlive this test and redirect later in-process tests)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def train_runs(flow) -> list:
    runs = [r for r in flow.steps("train") if r.info.status == "FINISHED"]
    assert len(runs) == TINY_EVALUATED_RUNS
    return runs


def history_lengths(client, run) -> dict[str, int]:
    return {key: len(client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}


# --- what evaluation leaves in every train run -----------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_every_train_run_holds_the_contract_metrics_and_artifacts(tiny_sqlite):
    client = tiny_sqlite.client()
    for run in train_runs(tiny_sqlite):
        rid, metrics = run.info.run_id, run.data.metrics
        assert run.data.tags["evaluated"] == "true" and run.data.tags["test.official"] == "true"
        assert not CONTRACT_TEST_KEYS - set(metrics), (rid, CONTRACT_TEST_KEYS - set(metrics))
        assert all(0 <= metrics[k] <= 1 for k in CONTRACT_TEST_KEYS if k != "test_loss")
        assert not tp.EVALUATION_ARTIFACTS - tiny_sqlite.artifacts(rid), rid
        # the per-epoch series of training are never overwritten by evaluation
        epochs = int(metrics["epochs_run"])
        for key in ("val_accuracy", "val_loss"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (rid, key, steps)
        lengths = history_lengths(client, run)
        assert all(lengths[k] == 1 for k in CONTRACT_TEST_KEYS), rid


def official_test_labels(real_data) -> np.ndarray:
    with gzip.open(real_data / "t10k-labels-idx1-ubyte.gz") as f:
        return np.frombuffer(f.read()[8:], dtype=np.uint8).astype(int)  # 8-byte IDX header


@pytest.mark.realdata
@pytest.mark.slow
def test_confusion_matrix_predictions_and_accuracy_agree(tiny_sqlite, real_data, tmp_path):
    labels = official_test_labels(real_data)
    for k, run in enumerate(train_runs(tiny_sqlite)):
        rid, accuracy = run.info.run_id, run.data.metrics["test_accuracy"]
        folder = tmp_path / str(k)
        cm = pd.read_csv(tiny_sqlite.download(rid, "confusion_matrix.csv", folder), index_col=0)
        cm = cm.to_numpy()
        assert cm.shape == (10, 10) and cm.sum() == 10_000
        assert np.trace(cm) / cm.sum() == pytest.approx(accuracy, abs=1e-12)
        assert (cm.sum(axis=1) == 1_000).all()  # rows are true classes: 1,000 each
        frame = pd.read_csv(tiny_sqlite.download(rid, "predictions.csv", folder))
        frame = frame.sort_values("index")
        assert frame["index"].tolist() == list(range(10_000))
        assert np.array_equal(frame["true"].to_numpy(), labels)  # the official file, in order
        assert np.bincount(frame["true"], minlength=10).tolist() == [1_000] * 10
        assert accuracy_score(frame["true"], frame["predicted"]) == pytest.approx(
            accuracy, abs=1e-12
        )
        crosstab = pd.crosstab(frame["true"], frame["predicted"]).reindex(
            index=range(10), columns=range(10), fill_value=0
        )
        assert np.array_equal(crosstab.to_numpy(), cm)
        proba = frame[[f"p_{key}" for key in config.CLASS_KEYS]].to_numpy()
        assert np.allclose(proba.sum(axis=1), 1, atol=1e-4)
        assert np.array_equal(proba.argmax(axis=1), frame["predicted"].to_numpy())
        report = json.loads(
            tiny_sqlite.download(rid, "classification_report.json", folder).read_text()
        )
        supports = [report[name]["support"] for name in config.CLASS_NAMES]
        assert supports == [1_000] * 10, supports


# --- evaluating again ------------------------------------------------------------------------


def pipeline_run(flow, model: str):
    """The first train run of `model` that the pipeline's main run started."""
    runs = [r for r in flow.children() if r.data.tags.get("model") == model]
    assert runs and runs[0].data.tags["pipeline.step"] == "train"
    return runs[0]


@pytest.fixture(scope="module")
def reevaluated(tiny_sqlite, tmp_path_factory):
    """An mlp run of the pipeline, evaluated once more as users do: (before, after, result)."""
    client = tiny_sqlite.client()
    rid = pipeline_run(tiny_sqlite, "mlp").info.run_id

    def snapshot(name: str) -> dict:
        current = client.get_run(rid)
        folder = tmp_path_factory.mktemp(name)
        return {
            "metrics": dict(current.data.metrics),
            "history": history_lengths(client, current),
            "artifacts": sorted(a.path for a in client.list_artifacts(rid)),
            "predictions": tiny_sqlite.download(rid, "predictions.csv", folder).read_bytes(),
            "tags": dict(current.data.tags),
        }

    before = snapshot("before")
    result = run_step(["evaluate", "--run_id", rid], tiny_sqlite.env)
    assert result.returncode == 0, result.stderr[-3000:]
    return before, snapshot("after"), result


@pytest.mark.realdata
@pytest.mark.slow
def test_evaluating_again_gives_identical_numbers_and_no_duplicates(reevaluated):
    before, after, result = reevaluated
    assert after["metrics"] == before["metrics"]  # identical, not merely close
    assert after["history"] == before["history"]  # no second entry in any history
    assert after["artifacts"] == before["artifacts"]  # overwritten in place, none added
    assert after["predictions"] == before["predictions"]
    assert after["tags"]["evaluated_by"] != before["tags"]["evaluated_by"]
    assert "test_accuracy" in result.stdout


@pytest.mark.realdata
@pytest.mark.slow
def test_tta_flip_adds_its_own_keys_and_keeps_test_accuracy(tiny_sqlite, monkeypatch):
    """In-process (no second Python start): flip TTA on a scikit-learn run."""
    for key, value in tiny_sqlite.env.items():
        monkeypatch.setenv(key, value)
    client = tiny_sqlite.client()
    run = pipeline_run(tiny_sqlite, "logreg")
    rid, before = run.info.run_id, run.data.metrics
    assert not any(k.startswith("test_tta_") for k in before)
    # training's val_loss is evaluation's val_log_loss for a baseline (both in float64;
    # float32 probabilities clipped at 1.2e-7 put them 0.007 apart)
    assert before["val_loss"] == pytest.approx(before["val_log_loss"], rel=1e-6)
    with tracking_to(tiny_sqlite.uri):
        values = evaluation.evaluate(evaluation.check(rid), tta="flip")
    after = client.get_run(rid).data.metrics
    new = set(after) - set(before)
    assert new and all(k.startswith("test_tta_flip_") for k in new), sorted(new)
    for key in CONTRACT_TEST_KEYS:
        if key.startswith("test_"):
            assert f"test_tta_flip_{key[5:]}" in after, key
    assert 0 < after["test_tta_flip_accuracy"] <= 1
    assert values["test_tta_flip_accuracy"] == after["test_tta_flip_accuracy"]
    assert {k: after[k] for k in before} == before  # test_accuracy and the rest unchanged
    lengths = history_lengths(client, client.get_run(rid))
    assert all(n == 1 for k, n in lengths.items() if k.startswith("test_")), lengths


@pytest.mark.realdata
@pytest.mark.slow
def test_evaluate_defaults_to_the_newest_finished_train_run(tiny_sqlite, monkeypatch):
    """INTERFACE.md: run_id defaults to the newest finished train run, evaluated or not (so
    `evaluate --tta flip` after `evaluate` adds to that run, not to an older one)."""
    from pipeline import tracking

    for key, value in tiny_sqlite.env.items():
        monkeypatch.setenv(key, value)
    newest = max(train_runs(tiny_sqlite), key=lambda r: r.info.start_time)
    assert newest.data.tags.get("evaluated") == "true"  # evaluated already, still the default
    with tracking_to(tiny_sqlite.uri):
        assert tracking.latest_train_run() == newest.info.run_id


# --- what evaluate refuses -------------------------------------------------------------------


def one_error_line(result) -> str:
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("which", ["missing", "prepare run"])
def test_a_run_that_is_no_train_run_is_refused(tiny_sqlite, which):
    if which == "missing":
        rid = "0123456789abcdef0123456789abcdef"
    else:
        rid = tiny_sqlite.steps("prepare")[0].info.run_id
    evaluations = len(tiny_sqlite.steps("evaluate"))
    message = one_error_line(run_step(["evaluate", "--run_id", rid], tiny_sqlite.env))
    assert rid in message
    assert ("does not exist" if which == "missing" else "not a train run") in message
    assert len(tiny_sqlite.steps("evaluate")) == evaluations  # refused before a run started


@pytest.mark.parametrize(
    "args, word",
    [
        (["--run_id", "not-an-id"], "run_id"),
        (["--tta", "rotate"], "tta"),
        (["--allow_unofficial", "maybe"], "allow_unofficial"),
    ],
)
def test_bad_values_are_refused_by_the_parser(args, word, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse("evaluate", args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and word in err


def test_run_ids_are_normalised():
    a, b = "ab" * 16, "12" * 16

    def parse(args):
        return cli.parse("evaluate", args).run_id

    assert parse([]) == "latest"
    assert parse(["--run_id", f" {a.upper()} , {b},{a} "]) == f"{a},{b}"


@pytest.fixture
def unofficial_run(tiny_idx_dir, stores) -> str:
    """A finished mlp train run on synthetic IDX files prepared with allow_unofficial=true
    (in-process: no Python start), in this test's own store."""
    from pipeline import data, fit

    with tracking_to(stores["MLFLOW_TRACKING_URI"]):
        raw = data.load_raw(tiny_idx_dir, allow_unofficial=True)
        _, manifest, _ = data.write_cache(raw, 0.1, 42)
        assert not manifest["official"]
        settings = config.TrainSettings(
            model="mlp", epochs=1, batch_size=64, dataset=manifest["digest"]
        )
        rid, _ = fit.run(fit.prepare(settings))
    return rid


@pytest.mark.slow
def test_an_unofficial_test_set_is_refused_unless_allowed(unofficial_run, stores):
    import mlflow

    message = one_error_line(run_step(["evaluate", "--run_id", unofficial_run], stores))
    assert "not the official Fashion-MNIST test set" in message and "allow_unofficial" in message
    client = mlflow.MlflowClient(stores["MLFLOW_TRACKING_URI"])
    run = client.get_run(unofficial_run)
    assert "evaluated" not in run.data.tags and "test_accuracy" not in run.data.metrics
    steps = [r.data.tags.get("pipeline.step") for r in client.search_runs([run.info.experiment_id])]
    assert steps == ["train"]  # no evaluate run was started
    # allowed: evaluated, and marked so that the leaderboard keeps it apart
    with tracking_to(stores["MLFLOW_TRACKING_URI"]):
        values = evaluation.evaluate(evaluation.check(unofficial_run, allow_unofficial=True))
    run = client.get_run(unofficial_run)
    assert run.data.tags["test.official"] == "false" and run.data.tags["evaluated"] == "true"
    assert run.data.metrics["test_accuracy"] == values["test_accuracy"]


@pytest.fixture
def synthetic_digest(tiny_idx_dir, stores) -> str:
    from pipeline import data

    _, manifest, _ = data.write_cache(data.load_raw(tiny_idx_dir, allow_unofficial=True), 0.1, 42)
    return manifest["digest"]


@pytest.mark.parametrize("altered", [False, True], ids=["as trained", "altered after validation"])
def test_a_logged_model_that_does_not_score_its_validation_accuracy_is_flagged(
    altered, synthetic_digest, stores, monkeypatch, capsys
):
    """Evaluate logs the logged model's validation accuracy and warns (tag and stderr line)
    when it is more than 0.2 points from what training recorded for the logged weights."""
    import torch

    from pipeline import fit, tracking

    original = tracking.log_torch_model

    def log_altered(module, *args, **kwargs):
        with torch.no_grad():  # a bug between validation and logging, made on purpose
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.5)
        return original(module, *args, **kwargs)

    if altered:
        monkeypatch.setattr(tracking, "log_torch_model", log_altered)
    with tracking_to(stores["MLFLOW_TRACKING_URI"]):
        settings = config.TrainSettings(model="mlp", epochs=3, dataset=synthetic_digest)
        run_id, summary = fit.run(fit.prepare(settings))
        values = evaluation.evaluate(evaluation.check(run_id, allow_unofficial=True))
        tags = tracking.get_run(run_id).data.tags
    gap = abs(values["val_model_accuracy"] - summary["logged_val_accuracy"])
    if altered:
        assert gap > 0.002 and "evaluation.warning" in tags
        assert "warning: run" in capsys.readouterr().err
    else:
        assert gap == pytest.approx(0, abs=1e-6) and "evaluation.warning" not in tags


def test_a_train_run_without_a_model_is_refused_with_a_hint_that_works(stores):
    """Resume is suggested only where it can work: a run refused before it trained (no
    checkpoint) was told to resume, which then failed with "no checkpoint"."""
    import mlflow

    from pipeline import config, evaluation, tracking
    from pipeline.errors import UserError

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        store = mlflow.MlflowClient()
        run = store.create_run(tracking.ensure_experiment(), tags={"pipeline.step": "train"})
        run_id = run.info.run_id
        store.set_terminated(run_id, "FAILED")
        with pytest.raises(UserError, match="is FAILED and has no logged model") as refused:
            evaluation.check(run_id)
        assert "resume" not in str(refused.value)
        checkpoint = config.checkpoint_path(run_id)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"an epoch")  # only its presence is read here
        with pytest.raises(UserError, match=f"train --resume {run_id}"):
            evaluation.check(run_id)
    finally:
        mlflow.set_tracking_uri(None)
