"""pipeline.metrics against scikit-learn / scipy references and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from pipeline import metrics
from pipeline.config import CLASS_KEYS, CLASS_NAMES, NUM_CLASSES

LABELS = list(range(NUM_CLASSES))
MNIST_TEST_SUPPORTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray]:
    """600 labels and float32 softmax rows that lean toward the true class (~60% right)."""
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, NUM_CLASSES, size=600)
    logits = rng.normal(size=(600, NUM_CLASSES))
    logits[np.arange(600), y_true] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, proba.astype(np.float32)


@pytest.fixture(scope="module")
def computed(predictions) -> dict[str, float]:
    return metrics.classification_metrics(*predictions, prefix="test")


def _label_reference(average: str | None, name: str):
    """sklearn's precision / recall / F1 with our labels and zero_division."""
    func = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[name]
    return lambda y, p: func(y, p.argmax(1), labels=LABELS, average=average, zero_division=0)


SCALAR_REFERENCES = {
    "test_accuracy": lambda y, p: skm.accuracy_score(y, p.argmax(1)),
    "test_log_loss": lambda y, p: skm.log_loss(y, p, labels=LABELS),
    "test_top2_accuracy": lambda y, p: skm.top_k_accuracy_score(y, p, k=2, labels=LABELS),
    "test_roc_auc_macro": lambda y, p: skm.roc_auc_score(y, p, multi_class="ovr", labels=LABELS),
} | {
    f"test_{name}_{average}": _label_reference(average, name)
    for name in ("precision", "recall", "f1")
    for average in ("macro", "weighted")
}


@pytest.mark.parametrize("key", sorted(SCALAR_REFERENCES))
def test_scalar_metric_matches_sklearn(predictions, computed, key):
    # rel 1e-5: the reference sees the float32 rows as given, we compute in float64.
    assert computed[key] == pytest.approx(SCALAR_REFERENCES[key](*predictions), rel=1e-5)


@pytest.mark.parametrize("loss, smoothing", [("ce", 0.0), ("ce", 0.1), ("nll", 0.0), ("mse", 0.0)])
def test_training_loss_matches_the_engines_loss(loss, smoothing):
    """test_loss is the model's own training loss on test: the engine's loss on logits."""
    import torch

    from pipeline import engine

    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(200, NUM_CLASSES)) * 2, dtype=torch.float64)
    y = torch.tensor(rng.integers(0, NUM_CLASSES, size=200))
    expected = float(engine.make_loss(loss, smoothing)(logits, y))
    proba = torch.softmax(logits, dim=1).numpy()
    assert metrics.training_loss(y.numpy(), proba, loss, smoothing) == pytest.approx(
        expected, rel=1e-9
    )


@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_per_class_metric_matches_sklearn(predictions, computed, name):
    expected = _label_reference(None, name)(*predictions)
    got = [computed[f"test_{name}_{key}"] for key in CLASS_KEYS]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_key_set_is_the_contract(computed):
    per_class = {f"test_{m}_{k}" for m in ("precision", "recall", "f1") for k in CLASS_KEYS}
    extra = {"test_ece", "test_accuracy_ci_low", "test_accuracy_ci_high"}
    assert set(computed) == set(SCALAR_REFERENCES) | per_class | extra
    assert all(isinstance(v, float) for v in computed.values())
    val = metrics.classification_metrics(np.arange(10), np.eye(10), prefix="val")
    assert {k.replace("test_", "val_", 1) for k in computed} == set(val)


def test_absent_class_keeps_keys_and_zero_scores():
    y_true = np.array([0, 0, 1, 1, 2])  # classes 3..9 never occur
    proba = np.full((5, NUM_CLASSES), 0.01)
    proba[np.arange(5), [0, 0, 1, 2, 2]] = 0.91
    got = metrics.classification_metrics(y_true, proba, prefix="val")
    assert got["val_f1_bag"] == 0.0 and got["val_recall_ankle_boot"] == 0.0
    assert np.isnan(got["val_roc_auc_macro"])  # undefined for an absent class
    assert got["val_accuracy"] == pytest.approx(0.8)


def test_confusion_matches_sklearn(predictions):
    y_true, proba = predictions
    cm = metrics.confusion(y_true, proba.argmax(1))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, proba.argmax(1)))
    frame = metrics.confusion_frame(cm)
    assert list(frame.index) == list(CLASS_NAMES) == list(frame.columns)
    assert frame.loc["Coat", "Shirt"] == cm[4, 6]  # rows true, columns predicted


def test_confusion_keeps_ten_labels_when_classes_absent():
    assert metrics.confusion(np.array([3, 3]), np.array([3, 5])).shape == (10, 10)


def test_classification_report_uses_class_names(predictions):
    y_true, proba = predictions
    report = metrics.classification_report_dict(y_true, proba.argmax(1))
    assert set(CLASS_NAMES) <= set(report)
    f1 = skm.f1_score(y_true, proba.argmax(1), labels=LABELS, average=None)
    assert report["Ankle boot"]["f1-score"] == pytest.approx(f1[9])


def test_most_confused_pairs():
    cm = np.diag(np.full(10, 100))
    cm[6, 0], cm[4, 2], cm[0, 6] = 30, 20, 20  # shirt->tee, coat->pullover, tee->shirt
    pairs = metrics.most_confused_pairs(cm, k=2)
    assert list(pairs.columns) == ["true", "predicted", "count", "share"]
    # The tie at 20 is broken by (true, predicted) order: T-shirt/top (0) before Coat (4).
    assert pairs.values.tolist() == [
        ["Shirt", "T-shirt/top", 30, 30 / 130],
        ["T-shirt/top", "Shirt", 20, 20 / 120],
    ]


def _rows(confidences: list[float], predicted: list[int]) -> np.ndarray:
    """Probability rows with the given top class and confidence, the rest spread evenly."""
    proba = np.array([[(1 - c) / 9] * 10 for c in confidences])
    proba[np.arange(len(confidences)), predicted] = confidences
    return proba


def test_ece_hand_computed():
    proba = _rows([0.9, 0.9, 0.55, 0.3], predicted=[0, 0, 2, 3])
    y_true = np.array([0, 1, 2, 3])  # the second 0.9 prediction is wrong
    # 15 bins of width 1/15: 0.9 -> bin 13 (0.867, 0.933], 0.55 -> bin 8 (0.533, 0.6],
    # 0.3 -> bin 4 (0.267, 0.333].
    # bin 13: conf 0.9, acc 1/2 -> |0.5 - 0.9| * 2/4 = 0.2
    # bin 8:  conf 0.55, acc 1  -> 0.45 * 1/4        = 0.1125
    # bin 4:  conf 0.3,  acc 1  -> 0.7 * 1/4         = 0.175
    # ECE = 0.2 + 0.1125 + 0.175 = 0.4875
    assert metrics.expected_calibration_error(y_true, proba) == pytest.approx(0.4875)
    bins = metrics.reliability_bins(y_true, proba)
    assert len(bins) == 15 and bins["count"].sum() == 4
    assert bins.loc[13, ["confidence", "accuracy", "count"]].tolist() == pytest.approx(
        [0.9, 0.5, 2]
    )
    assert np.isnan(bins.loc[0, "accuracy"])  # empty bins are kept, with NaN


def test_ece_zero_when_calibrated():
    # Confidence 0.5 in every row and exactly half right: perfectly calibrated.
    proba = _rows([0.5] * 4, predicted=[0, 0, 0, 0])
    assert metrics.expected_calibration_error(np.array([0, 0, 1, 1]), proba) == pytest.approx(0)


def test_wilson_interval_hand_computed():
    # 8 / 10, z = 1.96: z^2 = 3.8416, denom = 1 + 0.38416 = 1.38416,
    # centre = (0.8 + 0.19208) / 1.38416 = 0.716738,
    # half = 1.96 / 1.38416 * sqrt(0.8 * 0.2 / 10 + 3.8416 / 400) = 1.416021 * 0.160012
    #      = 0.226581  ->  (0.490157, 0.943319)
    low, high = metrics.accuracy_interval(8, 10)
    assert (low, high) == pytest.approx((0.490157, 0.943319), abs=1e-5)


@pytest.mark.parametrize("correct, n", [(0, 50), (50, 50), (9000, 10000)])
def test_wilson_interval_contains_estimate_and_stays_in_unit_range(correct, n):
    low, high = metrics.accuracy_interval(correct, n)
    assert 0.0 <= low <= correct / n <= high <= 1.0


def test_metrics_ci_brackets_accuracy(computed):
    assert computed["test_accuracy_ci_low"] < computed["test_accuracy"]
    assert computed["test_accuracy"] < computed["test_accuracy_ci_high"]


def _mcnemar_reference(table: np.ndarray) -> tuple[float, float]:
    """(statistic, p) from the 2x2 table [[both right, A only], [B only, both wrong]], by
    another road than metrics.mcnemar's: the exact test is the two-sided binomial tail (the
    doubled CDF), the corrected chi-square the square of the continuity-corrected normal z
    of the same sign test (chi2(1) is z squared), its p the two normal tails."""
    b, c = int(table[0, 1]), int(table[1, 0])
    if b + c < 25:
        return float(b), min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5))
    z = (abs(b - c) - 1) / np.sqrt(b + c)
    return z**2, 2 * stats.norm.sf(z)


def test_mcnemar_matches_a_published_value():
    """R's mcnemar.test (continuity-corrected) on [[500, 40], [15, 45]]: X2 = 10.473,
    p = 0.001211."""
    pairs = [(True, True)] * 500 + [(True, False)] * 40 + [(False, True)] * 15
    pairs += [(False, False)] * 45
    got = metrics.mcnemar(*np.array(pairs).T)
    assert got["statistic"] == pytest.approx(10.4727, abs=1e-4)
    assert got["p_value"] == pytest.approx(0.0012115, abs=1e-7)


@pytest.mark.parametrize(
    "table",
    [[[50, 3], [9, 38]], [[50, 9], [3, 38]], [[40, 5], [5, 10]], [[500, 40], [15, 45]]],
    ids=["exact-b<c", "exact-b>c", "exact-tie", "chi2"],
)
def test_mcnemar_against_reference(table):
    table = np.array(table)
    # Expand the table into per-sample correctness vectors, shuffled.
    cells = [(True, True), (True, False), (False, True), (False, False)]
    pairs = np.repeat(np.array(cells), table.ravel(), axis=0)
    pairs = np.random.default_rng(1).permutation(pairs)
    got = metrics.mcnemar(pairs[:, 0], pairs[:, 1])
    statistic, p_value = _mcnemar_reference(table)
    assert (got["b"], got["c"]) == (table[0, 1], table[1, 0])
    assert got["method"] == ("exact" if table[0, 1] + table[1, 0] < 25 else "chi2")
    assert got["statistic"] == pytest.approx(statistic)
    assert got["p_value"] == pytest.approx(p_value)


def test_mcnemar_identical_classifiers():
    same = np.array([True, False, True])
    assert metrics.mcnemar(same, same)["p_value"] == 1.0


def test_official_split_accepted():
    metrics.check_official_test_split(np.repeat(np.arange(10), 1000))


@pytest.mark.parametrize(
    "labels",
    [
        np.repeat(np.arange(10), MNIST_TEST_SUPPORTS),  # MNIST digits' test supports
        np.repeat(np.arange(10), 1000)[:-1],  # one label short
        np.repeat(np.arange(10), 100),  # a subset
        np.repeat(np.arange(1, 11), 1000),  # labels 1..10
    ],
    ids=["mnist", "9999", "subset", "off-by-one"],
)
def test_official_split_rejected(labels):
    with pytest.raises(ValueError, match="official"):
        metrics.check_official_test_split(labels)


def test_predictions_frame_agrees_with_confusion(predictions):
    y_true, proba = predictions
    frame = metrics.predictions_frame(y_true, proba)
    probs = [f"p_{key}" for key in CLASS_KEYS]
    head = ["index", "true", "predicted", "true_name", "predicted_name", "confidence"]
    assert list(frame.columns) == head + probs
    counts = pd.crosstab(frame["true"], frame["predicted"]).reindex(
        index=LABELS, columns=LABELS, fill_value=0
    )
    np.testing.assert_array_equal(counts.to_numpy(), metrics.confusion(y_true, proba.argmax(1)))
    np.testing.assert_allclose(frame[probs].to_numpy(), proba)
    np.testing.assert_allclose(frame["confidence"], proba.max(axis=1))
    assert (frame["true_name"] == [CLASS_NAMES[i] for i in y_true]).all()
    assert frame["index"].tolist() == list(range(len(y_true)))


@pytest.mark.parametrize(
    "xs, ys, expected",
    [
        # (cost, accuracy): 1 beats 2 (cheaper and better); 3 is dearest but best;
        # 4 ties 0 exactly (both stay); 5 is NaN and never on the front.
        ([1.0, 2.0, 3.0, 10.0, 1.0, np.nan], [0.80, 0.90, 0.85, 0.95, 0.80, 0.99], [0, 4, 1, 3]),
        ([5.0], [0.5], [0]),
        ([1.0, 1.0], [0.7, 0.9], [1]),  # same cost: the more accurate wins
        ([1.0, 2.0], [0.9, 0.9], [0]),  # same accuracy: the cheaper wins
        ([], [], []),
    ],
)
def test_pareto_front(xs, ys, expected):
    assert metrics.pareto_front(xs, ys) == expected


def test_holm_matches_a_hand_computation():
    # m = 4 (NaN excluded): sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5
    out = metrics.holm([0.03, 0.01, np.nan, 0.5, 0.02])
    assert out[[1, 4, 0, 3]] == pytest.approx([0.04, 0.06, 0.06, 0.5])
    assert np.isnan(out[2])
    assert metrics.holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # 0.8 * 2 capped at 1; monotone


def test_welch_matches_scipy():
    a, b = [0.91, 0.92, 0.93], [0.90, 0.905, 0.899, 0.9]
    assert metrics.welch(a, b)["p_value"] == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue
    )
