"""Each pipeline.plots builder returns a renderable Figure with the expected panels."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: the tests never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline import plots  # noqa: E402
from pipeline.config import CLASS_KEYS, CLASS_NAMES  # noqa: E402

RNG = np.random.default_rng(0)
Y_TRUE = np.arange(60) % 10  # every class present, as roc / pr curves need
_LOGITS = RNG.normal(size=(60, 10))
_LOGITS[np.arange(60), Y_TRUE] += 1.0
PROBA = np.exp(_LOGITS) / np.exp(_LOGITS).sum(axis=1, keepdims=True)
IMAGES = RNG.integers(0, 256, size=(11, 28, 28), dtype=np.uint8)
HISTORY = {
    "train_loss": [1.0, 0.6, 0.4],
    "val_loss": [0.9, 0.7, 0.6],
    "train_accuracy": [0.6, 0.8, 0.9],
    "val_accuracy": [0.65, 0.75, 0.8],
}
RUNS = pd.DataFrame(
    {
        "model": ["mlp", "cnn2", "resnet18", "svc"],
        "train_time_s": [10.0, 60.0, 600.0, 300.0],
        "test_accuracy": [0.88, 0.91, 0.94, 0.89],
    }
)

# name -> (builder call, expected number of axes)
CASES = {
    "confusion": (lambda: plots.confusion_matrix_figure(np.diag(np.arange(1, 11))), 2),
    "learning_curves": (lambda: plots.learning_curves_figure(HISTORY), 2),
    "learning_curves_partial": (lambda: plots.learning_curves_figure({"val_loss": [1.0]}), 2),
    "roc_pr": (lambda: plots.roc_pr_figure(Y_TRUE, PROBA), 2),
    "reliability": (lambda: plots.reliability_figure(Y_TRUE, PROBA), 2),
    "image_grid": (lambda: plots.image_grid_figure(IMAGES, [f"t{i}" for i in range(11)]), 11),
    "image_grid_one": (lambda: plots.image_grid_figure(IMAGES[:1], ["only"]), 1),
    "image_grid_empty": (lambda: plots.image_grid_figure(IMAGES[:0], []), 1),
    "class_balance": (
        lambda: plots.class_balance_figure(
            pd.DataFrame({"train": 5400, "val": 600, "test": 1000}, index=list(CLASS_NAMES))
        ),
        1,
    ),
    # The heatmap has a colour bar: its own axes.
    "f1_heatmap": (
        lambda: plots.f1_heatmap_figure(
            pd.DataFrame(RNG.uniform(0.6, 1.0, (3, 10)), index=["a", "b", "c"], columns=CLASS_KEYS)
        ),
        2,
    ),
    "pareto": (lambda: plots.pareto_figure(RUNS, "train_time_s", "test_accuracy", "model"), 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_returns_renderable_figure(name):
    build, n_axes = CASES[name]
    fig = build()
    try:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == n_axes
        fig.savefig(io.BytesIO(), format="png", dpi=40)  # renders: what mlflow.log_figure does
    finally:
        plt.close(fig)


def test_builders_leave_pyplot_untouched():
    plots.learning_curves_figure(HISTORY)
    assert plt.get_fignums() == []  # nothing for a long evaluation loop to leak


def test_pareto_figure_log_x_and_front():
    fig = plots.pareto_figure(RUNS, "train_time_s", "test_accuracy", "model")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    # svc (300 s, 0.89) is beaten by cnn2 (60 s, 0.91); the rest form the front.
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["cnn2", "mlp", "resnet18"]
    plt.close(fig)


def test_image_grid_rejects_mismatched_titles():
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid_figure(IMAGES[:2], ["one"])


def test_pareto_front_hand_case():
    # (cost, accuracy): B is cheaper and better than D; A, B, C trade cost for accuracy.
    xs = [1.0, 2.0, 8.0, 4.0]  # A, B, C, D
    ys = [0.80, 0.90, 0.95, 0.85]
    assert plots.pareto_front(xs, ys) == [0, 1, 2]
