"""Multilayer perceptron: the flattened 784 pixels through ReLU dense layers.

The torch counterpart of the Fashion-MNIST paper's MLPClassifier baseline (87.1%, cited in
report 001), with dropout so it can be trained as long as the CNNs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pipeline import config
from pipeline.models.layers import Standardize, check_dropout, check_ints, dense_stack


def build_mlp(*, dropout: float | None = None, hidden: Sequence[int] = (256, 128)) -> nn.Module:
    """784 -> hidden... -> 10, each hidden layer Linear -> ReLU -> Dropout.

    hidden: (256, 128) is about 235k parameters, a third of cnn1, and trains at CPU speed;
    (100,) is the paper's MLPClassifier shape.
    dropout: None = 0.2 (enough for a 2-layer MLP on 54k images without slowing it down).
    """
    p = check_dropout("mlp", 0.2 if dropout is None else dropout)
    sizes = check_ints("mlp", "hidden", hidden, allow_empty=True)  # () = logistic regression
    layers, width = dense_stack(sizes, 28 * 28, p)
    return nn.Sequential(Standardize(), nn.Flatten(), *layers, nn.Linear(width, config.NUM_CLASSES))
