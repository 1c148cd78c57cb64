"""Matplotlib figure builders for evaluation and comparison; no file or network I/O.

Each builder returns a `matplotlib.figure.Figure` made directly (not through pyplot), so it
needs no display, works under any backend including Agg, and is not kept alive by pyplot's
global figure list: the caller logs it (`mlflow.log_figure`) or saves it, then drops it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from pipeline.config import CLASS_NAMES
from pipeline.metrics import ECE_BINS, expected_calibration_error, pareto_front, reliability_bins

__all__ = [
    "class_balance_figure",
    "confusion_matrix_figure",
    "f1_heatmap_figure",
    "image_grid_figure",
    "learning_curves_figure",
    "pareto_figure",
    "pareto_front",
    "reliability_figure",
    "roc_pr_figure",
]


def _annotate_cells(ax, values: np.ndarray, fmt: str, threshold: float, dark_high: bool) -> None:
    """Write each cell's value; white text on dark cells so it stays readable.

    dark_high: the colour map is dark above `threshold` (Blues) rather than below (viridis).
    """
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        color = "white" if (value > threshold) == dark_high else "black"
        ax.text(j, i, format(value, fmt), ha="center", va="center", color=color, fontsize=7)


def _class_axes(ax, names=CLASS_NAMES) -> None:
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)


def confusion_matrix_figure(cm: np.ndarray) -> Figure:
    """Two panels: raw counts and rows normalised to 1 (rows true, columns predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = cm / cm.sum(axis=1, keepdims=True)
    fig = Figure(figsize=(16, 7), layout="constrained")
    panels = [(cm, ".0f", "counts"), (normalised, ".2f", "share of the true class")]
    for ax, (values, fmt, title) in zip(fig.subplots(1, 2), panels, strict=True):
        ax.imshow(values, cmap="Blues")
        _annotate_cells(ax, values, fmt, np.nanmax(values) / 2, dark_high=True)
        _class_axes(ax)
        ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({title})")
    return fig


def learning_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Train vs validation loss and accuracy per epoch; missing series are skipped."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split in ("train", "val"):
            values = history.get(f"{split}_{metric}") or []
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=split)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def roc_pr_figure(y_true: np.ndarray, proba: np.ndarray) -> Figure:
    """One-vs-rest ROC and precision-recall curves per class, AUC / AP in the legends."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    fig = Figure(figsize=(13, 6), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    for c, name in enumerate(CLASS_NAMES):
        positive = y_true == c
        if positive.all() or not positive.any():  # both curves need both outcomes
            continue
        fpr, tpr, _ = skm.roc_curve(positive, proba[:, c])
        auc = skm.roc_auc_score(positive, proba[:, c])
        ax_roc.plot(fpr, tpr, lw=1, label=f"{name} (AUC {auc:.3f})")
        precision, recall, _ = skm.precision_recall_curve(positive, proba[:, c])
        ap = skm.average_precision_score(positive, proba[:, c])
        ax_pr.plot(recall, precision, lw=1, label=f"{name} (AP {ap:.3f})")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (one-vs-rest)")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (one-vs-rest)")
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7, loc="lower left" if ax is ax_pr else "lower right")
        ax.grid(alpha=0.3)
    return fig


def reliability_figure(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> Figure:
    """Reliability diagram (accuracy vs confidence per bin) over a histogram of confidence."""
    bins = reliability_bins(y_true, proba, n_bins)
    used = bins["count"] > 0
    ece = expected_calibration_error(y_true, proba, n_bins)
    width = 1.0 / n_bins
    fig = Figure(figsize=(6, 7), layout="constrained")
    ax, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(
        bins["bin_low"],
        bins["accuracy"].fillna(0),
        width=width,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    ax.plot(
        bins["confidence"][used],
        bins["accuracy"][used],
        "o",
        color="C3",
        ms=4,
        label="mean confidence",
    )
    ax.set(ylabel="accuracy", ylim=(0, 1), title=f"Reliability diagram (ECE {ece:.4f})")
    ax.legend(loc="upper left")
    ax_hist.bar(bins["bin_low"], bins["count"], width=width, align="edge", edgecolor="black")
    ax_hist.set(xlabel="confidence (top probability)", ylabel="samples", xlim=(0, 1))
    return fig


def image_grid_figure(images: np.ndarray, titles: list[str], ncols: int = 8) -> Figure:
    """A grid of (N, 28, 28) uint8 images with one title each; one axes per image."""
    images = np.asarray(images)
    if len(images) != len(titles):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    fig = Figure(
        figsize=(1.6 * ncols, 1.9 * max(1, math.ceil(len(images) / ncols))), layout="constrained"
    )
    if len(images) == 0:  # e.g. no misclassified images: say so instead of failing
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no images", ha="center", va="center")
        ax.axis("off")
        return fig
    nrows = math.ceil(len(images) / ncols)
    for k, (image, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(nrows, min(ncols, len(images)), k + 1)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    return fig


def class_balance_figure(counts: pd.DataFrame) -> Figure:
    """Grouped bars: rows are classes, columns are splits (train, val, test)."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, counts.shape[1])
    x = np.arange(len(counts))
    for k, split in enumerate(counts.columns):
        ax.bar(x + k * width - 0.4 + width / 2, counts[split], width=width, label=str(split))
    ax.set_xticks(x, [str(i) for i in counts.index], rotation=30, ha="right")
    ax.set(ylabel="images", title="Images per class and split")
    ax.legend()
    return fig


def f1_heatmap_figure(frame: pd.DataFrame) -> Figure:
    """Per-class F1 heatmap: rows models, columns classes, values annotated."""
    values = frame.to_numpy(dtype=np.float64)
    fig = Figure(
        figsize=(1.0 * frame.shape[1] + 3, 0.45 * frame.shape[0] + 2), layout="constrained"
    )
    ax = fig.add_subplot()
    image = ax.imshow(
        values, cmap="viridis", vmin=np.nanmin(values), vmax=np.nanmax(values), aspect="auto"
    )
    _annotate_cells(ax, values, ".3f", (np.nanmin(values) + np.nanmax(values)) / 2, dark_high=False)
    ax.set_xticks(
        range(frame.shape[1]), [str(c) for c in frame.columns], rotation=45, ha="right", fontsize=8
    )
    ax.set_yticks(range(frame.shape[0]), [str(i) for i in frame.index], fontsize=8)
    ax.set_title("F1 per class")
    fig.colorbar(image, ax=ax, label="F1")
    return fig


def pareto_figure(frame: pd.DataFrame, x: str, y: str, label: str) -> Figure:
    """y (higher better) against cost x (lower better, log scale); the Pareto front marked."""
    data = frame[[x, y, label]].dropna(subset=[x, y])
    data = data[data[x] > 0]  # a log axis cannot show zero or negative costs
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(data[x], data[y], color="C0", s=20, label="runs")
    front = data.iloc[pareto_front(data[x].to_numpy(), data[y].to_numpy())]
    ax.step(front[x], front[y], where="post", color="C3", lw=1.2)
    ax.scatter(front[x], front[y], color="C3", s=40, zorder=3, label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(
            str(row[label]), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    ax.set_xscale("log")
    ax.set(
        xlabel=f"{x} (log scale, lower is better)",
        ylabel=f"{y} (higher is better)",
        title=f"{y} vs {x}",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig
