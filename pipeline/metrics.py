"""Predictions -> metrics: scikit-learn scores, confusion matrix, calibration and tests.

Pure functions of numpy arrays (labels `(N,)` int, probabilities `(N, 10)` float in the class
order of `config.CLASS_NAMES`). No torch, no MLflow: the evaluate step turns model outputs
into arrays, calls these, and logs the returned dicts and frames. Every score scikit-learn
implements comes from scikit-learn, always with `labels=range(10)` so a class missing from a
small sample never shifts a column or a key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from pipeline.config import CLASS_KEYS, CLASS_NAMES, NUM_CLASSES

LABELS = list(range(NUM_CLASSES))
ECE_BINS = 15  # equal-width confidence bins, the usual choice since Guo et al. (2017)
# Below this many discordant pairs McNemar's chi-square approximation is poor, so the exact
# binomial test is used instead (the common rule of thumb, as in statsmodels' docs).
MCNEMAR_EXACT_BELOW = 25
OFFICIAL_TEST_SIZE = 10_000
OFFICIAL_TEST_PER_CLASS = 1_000


def as_proba(proba: np.ndarray) -> np.ndarray:
    """(N, 10) float64 rows that sum to one.

    float32 softmax rows can miss 1 by ~1e-7, which scikit-learn's float64 checks
    (tolerance ~1.5e-8) flag; renormalising a true probability matrix changes nothing else.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected probabilities of shape (N, {NUM_CLASSES}), got {proba.shape}")
    proba = np.clip(proba, 0.0, None)
    return proba / proba.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, prefix: str) -> dict[str, float]:
    """All scalar metrics of one split, keyed `{prefix}_<name>` (INTERFACE.md spelling).

    `{prefix}_log_loss` is the log loss for every model; the model's own training loss on
    the split is `training_loss` (val_loss during training is that one, not log loss).
    """
    y_true = np.asarray(y_true)
    proba = as_proba(proba)
    y_pred = proba.argmax(axis=1)
    accuracy = skm.accuracy_score(y_true, y_pred)
    out = {
        "accuracy": accuracy,
        # sklearn clips probabilities to [eps, 1 - eps] (float64 eps), so a zero on the true
        # class costs ~36 nats instead of infinity.
        "log_loss": skm.log_loss(y_true, proba, labels=LABELS),
        "top2_accuracy": skm.top_k_accuracy_score(y_true, proba, k=2, labels=LABELS),
        "roc_auc_macro": _roc_auc_macro(y_true, proba),
        "ece": expected_calibration_error(y_true, proba),
    }
    out |= _precision_recall_f1(y_true, y_pred)
    low, high = accuracy_interval(int(np.sum(y_pred == y_true)), len(y_true))
    out |= {"accuracy_ci_low": low, "accuracy_ci_high": high}
    return {f"{prefix}_{name}": float(value) for name, value in out.items()}


def training_loss(
    y_true: np.ndarray, proba: np.ndarray, loss: str, label_smoothing: float = 0.0
) -> float:
    """The loss a model was trained with (pipeline.engine.make_loss), from probabilities:
    ce with label smoothing as torch computes it, nll (= log loss), mse of the probabilities
    against one-hot targets averaged over every element. scikit-learn baselines: log loss."""
    y_true = np.asarray(y_true)
    proba = as_proba(proba)
    log_p = np.log(np.clip(proba, np.finfo(np.float64).eps, 1.0))
    nll = -log_p[np.arange(len(y_true)), y_true]
    if loss == "mse":
        one_hot = np.eye(NUM_CLASSES)[y_true]
        return float(np.mean((proba - one_hot) ** 2))
    if loss == "ce" and label_smoothing:
        # torch: (1 - e) * nll + e * mean over classes of -log p_k
        return float(np.mean((1 - label_smoothing) * nll - label_smoothing * log_p.mean(axis=1)))
    return float(np.mean(nll))


def _precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Macro, weighted and per-class precision / recall / F1 (zero_division=0)."""
    out: dict[str, float] = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=LABELS, average=average, zero_division=0
        )
        out |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=LABELS, average=None, zero_division=0
    )
    for i, key in enumerate(CLASS_KEYS):
        out |= {f"precision_{key}": p[i], f"recall_{key}": r[i], f"f1_{key}": f[i]}
    return out


def _roc_auc_macro(y_true: np.ndarray, proba: np.ndarray) -> float:
    """One-vs-rest macro ROC AUC; NaN when a class is absent (its AUC is undefined)."""
    if len(np.unique(y_true)) < NUM_CLASSES:
        return math.nan
    return skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=LABELS)


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(10, 10) int counts: rows true class, columns predicted class."""
    return skm.confusion_matrix(y_true, y_pred, labels=LABELS)


def confusion_frame(cm: np.ndarray) -> pd.DataFrame:
    """The confusion matrix with class names on both axes (for `confusion_matrix.csv`)."""
    frame = pd.DataFrame(np.asarray(cm), index=list(CLASS_NAMES), columns=list(CLASS_NAMES))
    frame.index.name = "true"
    frame.columns.name = "predicted"
    return frame


def classification_report_dict(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """scikit-learn's classification report as a dict keyed by class name."""
    return skm.classification_report(
        y_true,
        y_pred,
        labels=LABELS,
        target_names=list(CLASS_NAMES),
        output_dict=True,
        zero_division=0,
    )


def most_confused_pairs(cm: np.ndarray, k: int = 10) -> pd.DataFrame:
    """The k largest off-diagonal cells: true, predicted, count, share of the true class."""
    cm = np.asarray(cm)
    rows, cols = np.nonzero(cm * (1 - np.eye(len(cm), dtype=cm.dtype)))
    counts = cm[rows, cols]
    # Stable sort on -count keeps ties in (true, predicted) order: reproducible tables.
    order = np.argsort(-counts, kind="stable")[:k]
    rows, cols, counts = rows[order], cols[order], counts[order]
    return pd.DataFrame(
        {
            "true": [CLASS_NAMES[i] for i in rows],
            "predicted": [CLASS_NAMES[j] for j in cols],
            "count": counts.astype(int),
            "share": counts / cm.sum(axis=1)[rows],
        }
    )


def reliability_bins(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width confidence bin: bounds, mean confidence, accuracy and count.

    Confidence is the top probability; bins are (low, high] like Guo et al. Empty bins keep
    their row with count 0 and NaN confidence / accuracy so the diagram keeps its x axis.
    """
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # ceil(c * n) - 1 puts c in (edge[b], edge[b+1]]; clip so 0 lands in the first bin.
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "confidence": mean_conf,
            "accuracy": accuracy,
            "count": count,
        }
    )


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE: sum over bins of |accuracy - confidence|, weighted by the bin's share of samples."""
    bins = reliability_bins(y_true, proba, n_bins)
    used = bins[bins["count"] > 0]
    gap = (used["accuracy"] - used["confidence"]).abs()
    return float((gap * used["count"]).sum() / bins["count"].sum())


def accuracy_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% for z=1.96).

    Unlike the normal approximation it stays inside [0, 1] and is sensible near 100%.
    """
    if n <= 0:
        raise ValueError("accuracy_interval needs n > 0 samples")
    p = correct / n
    denom = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test of two classifiers on the same samples.

    b = samples only A gets right, c = samples only B gets right. With b + c < 25 the exact
    two-sided binomial test of b ~ Binomial(b + c, 1/2) is used (statistic = b);
    otherwise the chi-square statistic with continuity correction (|b - c| - 1)^2 / (b + c)
    on 1 degree of freedom. Returns b, c, statistic, p_value and method ("exact" or "chi2").
    """
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("mcnemar needs two correctness vectors over the same samples")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:  # identical behaviour: no evidence of any difference
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if b + c < MCNEMAR_EXACT_BELOW:
        p_value = stats.binomtest(b, b + c, 0.5).pvalue
        return {"b": b, "c": c, "statistic": float(b), "p_value": float(p_value), "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    p_value = stats.chi2.sf(statistic, df=1)
    return {"b": b, "c": c, "statistic": statistic, "p_value": float(p_value), "method": "chi2"}


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's t-test (unequal variances) of two samples, e.g. per-seed test accuracies of
    two configurations: t statistic, two-sided p value, degrees of freedom."""
    result = stats.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False)
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "df": float(result.df),
    }


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of several p values (family-wise error); NaN stays NaN.

    Sorted ascending, the i-th of m is multiplied by (m - i), made non-decreasing, capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def predictions_frame(y_true: np.ndarray, proba: np.ndarray) -> pd.DataFrame:
    """One row per sample (for `predictions.csv`): labels, names, confidence, probabilities."""
    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    y_pred = proba.argmax(axis=1)
    names = np.array(CLASS_NAMES, dtype=object)
    frame = pd.DataFrame(
        {
            "index": np.arange(len(y_true)),
            "true": y_true,
            "predicted": y_pred,
            "true_name": names[y_true],
            "predicted_name": names[y_pred],
            "confidence": proba.max(axis=1),
        }
    )
    probs = pd.DataFrame(proba, columns=[f"p_{key}" for key in CLASS_KEYS])
    return pd.concat([frame, probs], axis=1)


def check_official_test_split(labels: np.ndarray) -> None:
    """Raise ValueError unless labels are the official Fashion-MNIST test split's shape.

    The official test set has exactly 1,000 images of each class; supports like 980, 1135,
    ... mean the numbers were computed on MNIST digits (or a subset), not Fashion-MNIST.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"not the official Fashion-MNIST test split: labels outside 0..{NUM_CLASSES - 1}"
        )
    support = np.bincount(labels.astype(int), minlength=NUM_CLASSES)
    if labels.size != OFFICIAL_TEST_SIZE or np.any(support != OFFICIAL_TEST_PER_CLASS):
        raise ValueError(
            f"not the official Fashion-MNIST test split: expected {OFFICIAL_TEST_SIZE} labels "
            f"with {OFFICIAL_TEST_PER_CLASS} per class, got {labels.size} with supports "
            f"{support.tolist()}"
        )


def pareto_front(xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray) -> list[int]:
    """Indices of the points no other point beats (lower x better, higher y better).

    A point is dominated when another has x <= and y >= with at least one strict; exact
    duplicates do not dominate each other. Non-finite points are never on the front.
    Indices come back sorted by x then y (the order to draw the front's staircase).
    O(n^2) memory, fine for the hundreds of runs a leaderboard holds.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    finite = np.isfinite(xs) & np.isfinite(ys)
    # dominates[j, i]: point j beats point i.
    no_worse = (xs[:, None] <= xs[None, :]) & (ys[:, None] >= ys[None, :])
    better = (xs[:, None] < xs[None, :]) | (ys[:, None] > ys[None, :])
    dominates = no_worse & better & finite[:, None]
    front = np.flatnonzero(finite & ~dominates.any(axis=0))
    return sorted(front.tolist(), key=lambda i: (xs[i], ys[i]))
