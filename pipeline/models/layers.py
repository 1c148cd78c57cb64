"""Pieces shared by every torch family: input standardisation and option checks.

Every torch model starts with `Standardize`, so it takes raw pixels (0..255, float32) and
a consumer of a logged model never has to know the training statistics (INTERFACE.md).
The `check_*` helpers turn a bad model option into a one-line `ValueError` that the train
step can print as `error: ...` without a traceback.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pipeline import config


class Standardize(nn.Module):
    """(x - PIXEL_MEAN) / PIXEL_STD on raw 0..255 pixels; the constants are buffers, not
    parameters, so they travel with the state dict but no optimizer ever touches them."""

    def __init__(self, mean: float = config.PIXEL_MEAN, std: float = config.PIXEL_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) raw -> same, ~N(0, 1)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.item():.3f}, std={self.std.item():.3f}"


# Raw black (0), the background of every Fashion-MNIST image, after standardisation: the
# value to pad with so a padded border looks like more background, not mid-grey.
BLACK = (0.0 - config.PIXEL_MEAN) / config.PIXEL_STD


def check_dropout(model: str, value: Any) -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"dropout for '{model}' must be a number in [0, 1), got {value!r}")
    return float(value)


def check_int(model: str, option: str, value: Any, low: int = 1) -> int:
    """An integer >= low (bools are rejected: `blocks=True` is a typo, not 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"option '{option}' of '{model}' must be an integer >= {low}, got {value!r}"
        )
    return value


def check_ints(model: str, option: str, value: Any, allow_empty: bool = False) -> tuple[int, ...]:
    """A sequence of positive integers (a JSON list is fine), returned as a tuple."""
    ok = isinstance(value, Sequence) and not isinstance(value, str)
    ok = ok and (allow_empty or len(value) > 0)
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        need = "a list" if allow_empty else "a non-empty list"
        raise ValueError(
            f"option '{option}' of '{model}' must be {need} of positive integers, got {value!r}"
        )
    return tuple(value)


def check_bool(model: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"option '{option}' of '{model}' must be true or false, got {value!r}")
    return value


def scaled_rates(dropout: float | None, defaults: Sequence[float]) -> tuple[float, ...]:
    """Per-layer dropout rates for nets whose reports use several rates (cnn3, cnn4).

    None keeps the report's rates; a value p rescales them so the largest (the dense
    head's) becomes p and the rest keep their ratio to it: the increasing schedule a report
    chose survives, p = 0 switches dropout off everywhere and one tuned number still moves
    every layer.
    """
    if dropout is None:
        return tuple(defaults)
    top = max(defaults)
    return tuple(dropout * rate / top for rate in defaults)


def dense_stack(
    sizes: Sequence[int],
    in_features: int,
    dropout: float,
    batchnorm: bool = False,
    activation: type[nn.Module] = nn.ReLU,
) -> tuple[list[nn.Module], int]:
    """Hidden dense layers: Linear -> activation [-> BatchNorm1d] -> Dropout for each size
    (the Keras `Dense(activation=...)`, BatchNormalization, Dropout order).

    Returns the layers and the width of the last one (the head's input)."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_features, size), activation()]
        if batchnorm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(nn.Dropout(dropout))
        in_features = size
    return layers, in_features


def named(**parts: nn.Module) -> nn.Sequential:
    """nn.Sequential with names (`features.0`, `classifier.3`) for readable summaries."""
    return nn.Sequential(OrderedDict(parts))
