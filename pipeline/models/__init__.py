"""The model registry: every name a user can pass as `model`, its builder and its defaults.

Torch models (`build_model`) take float32 (B, 1, 28, 28) raw pixels 0..255 and return
(B, 10) logits; they standardise inside forward() (layers.Standardize). scikit-learn
baselines (`build_baseline`) take the same arrays and give `predict_proba`. Variants are
keyword options of a family's builder (`blocks=4`), never new names (INTERFACE.md).
Importing this package loads torch but neither torchvision nor scikit-learn.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from pipeline.models import baselines, cnn, fast, mlp, resnet, rnn
from pipeline.models.layers import Standardize, check_dropout


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # mlp, cnn, resnet, rnn, fast, sklearn: the builder's module
    builder: Callable[..., Any]
    kind: Literal["torch", "sklearn"]
    description: str
    # sklearn only: images to fit on when the user's `subset` is 0; 0 = the whole split.
    default_subset: int = 0


_SPECS = (
    ModelSpec("mlp", "mlp", mlp.build_mlp, "torch", "MLP 784-256-128-10 with dropout"),
    ModelSpec("cnn1", "cnn", cnn.build_cnn1, "torch", "1 conv layer + dense 128 (report 002)"),
    ModelSpec("lenet5", "cnn", cnn.build_lenet5, "torch", "LeNet-5 on 32x32 padding (report 002)"),
    ModelSpec("cnn2", "cnn", cnn.build_cnn2, "torch", "2 conv layers + dense (reports 000, 003)"),
    ModelSpec("cnn3", "cnn", cnn.build_cnn3, "torch", "3 conv layers, BatchNorm, dropout (report 001)"),
    ModelSpec("cnn4", "cnn", cnn.build_cnn4, "torch", "4 conv layers, BatchNorm, dropout (report 002)"),
    ModelSpec("mini_resnet", "resnet", resnet.build_mini_resnet, "torch", "residual blocks of 64 filters (report 000)"),
    ModelSpec("resnet18", "resnet", resnet.build_resnet18, "torch", "torchvision ResNet-18, 1-channel stem (report 004)"),
    ModelSpec("vgg", "cnn", cnn.build_vgg, "torch", "VGG-style 3-stage conv stack (report 004)"),
    ModelSpec("lstm", "rnn", rnn.build_lstm, "torch", "128-unit LSTM over the 28 rows (report 003)"),
    ModelSpec("fastnet", "fast", fast.build_fastnet, "torch", "time-to-accuracy CNN, pool-first BN blocks, flip TTA"),
    # default_subset: fit times of each default on 2 CPU cores (the shared 2-core dev machine,
    # load average 2-5 from other jobs, so upper bounds), float32 raw pixels, a random 54,000
    # of the 60,000 training images (or uniform random pixels and labels), November 2026;
    # accuracy on the other 6,000:
    #   logreg         54,000 real: 116 s (85.5%); 54,000 random rows: 15 s   -> all
    #   random_forest  54,000 real:  70 s (88.2%); 54,000 random rows: 262 s  -> all
    #                  (random labels grow one leaf per image; real images do not)
    #   sk_mlp         54,000 real:  75 s, 28 epochs (88.9%); random rows: 9 s -> all
    #   svc            5,000 real: 20 s (86.4%); 10,000: 102 s (88.1%); 20,000: 304 s
    #                  (89.2%); 5,000 random rows: 89 s; predicting 6,000 images after a
    #                  10,000-image fit takes 22 s                          -> 10,000
    ModelSpec("logreg", "sklearn", baselines.build_logreg, "sklearn", "logistic regression, C=1"),
    ModelSpec("random_forest", "sklearn", baselines.build_random_forest, "sklearn", "random forest, 100 trees, entropy"),
    ModelSpec("sk_mlp", "sklearn", baselines.build_sk_mlp, "sklearn", "MLPClassifier, ReLU, 100 hidden"),
    ModelSpec("svc", "sklearn", baselines.build_svc, "sklearn", "RBF SVC, C=10, calibrated probabilities", default_subset=10_000),
)  # fmt: skip
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; ValueError naming the valid choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def is_sklearn(name: str) -> bool:
    return get_spec(name).kind == "sklearn"


def default_options(name: str) -> dict[str, Any]:
    """The builder's keyword options and their defaults (for logging the effective config);
    `dropout` is left out (None there means the model's own default) and so is `seed`."""
    params = inspect.signature(get_spec(name).builder).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("dropout", "seed")}


# Options that change how a model runs, not what it learns: never part of its identity.
EXECUTION_OPTIONS = {"random_forest": ("n_jobs",)}


def resolved_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The family's defaults with `options` merged in, minus execution-only options; lists
    for sequences, so spelled-out defaults and omitted ones compare equal."""
    merged = {**default_options(name), **options}
    skip = EXECUTION_OPTIONS.get(name, ())
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in sorted(merged.items())
        if k not in skip
    }


def _check_options(spec: ModelSpec, options: dict[str, Any]) -> None:
    valid = default_options(spec.name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        choices = ", ".join(valid) if valid else "none"
        raise ValueError(
            f"unknown option {unknown[0]!r} for model {spec.name!r}; valid options: {choices}"
        )


def build_model(name: str, dropout: float | None = None, **options: Any) -> nn.Module:
    """A freshly initialised torch model (train mode, CPU, float32).

    dropout: None = the model's own default rate (see its builder). options: the family's
    variants, e.g. build_model("mini_resnet", blocks=4); default_options(name) lists them.
    """
    spec = get_spec(name)
    if spec.kind != "torch":
        raise ValueError(f"{name!r} is a scikit-learn baseline; build it with build_baseline")
    _check_options(spec, options)
    if dropout is not None:
        check_dropout(name, dropout)
    return spec.builder(dropout=dropout, **options)


def check_options(name: str, options: dict[str, Any], dropout: float | None = None) -> None:
    """ValueError (one line) unless the model builds with these options and dropout, checked
    before any run or data: torch models are built on the meta device (shapes only, no
    memory, no time), baselines unfitted."""
    if get_spec(name).kind == "sklearn":
        build_baseline(name, 0, **options)
        return
    with torch.device("meta"):
        build_model(name, dropout=dropout, **options)


def default_dropout(name: str, **options: Any) -> float:
    """The rate `dropout=None` stands for: the largest dropout rate of the model built with
    it. Each builder declares its own default; passing this rate builds the same model
    (nets with several rates scale them so the largest is the given one, layers.scaled_rates),
    so a search can start from it."""
    model = build_model(name, **options)
    return max((m.p for m in model.modules() if isinstance(m, nn.Dropout)), default=0.0)


def build_baseline(name: str, seed: int, **options: Any) -> Any:
    """An unfitted scikit-learn Pipeline taking (N, 1, 28, 28) raw pixels, seeded by seed."""
    spec = get_spec(name)
    if spec.kind != "sklearn":
        raise ValueError(f"{name!r} is a torch model; build it with build_model")
    _check_options(spec, options)
    return spec.builder(seed=seed, **options)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter values; trainable_only counts those with requires_grad (Keras's
    "trainable params": BatchNorm running statistics are buffers, never counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def model_summary(module: nn.Module) -> str:
    """A text table, one row per layer that owns parameters or has no sub-layers, with its
    type, own parameter count and shape details, then the totals. Monospace, for a
    `summary.txt` artifact read in the MLflow UI."""
    rows = [("layer", "type", "params", "details")]
    for name, sub in module.named_modules():
        own = sum(p.numel() for p in sub.parameters(recurse=False))
        if own == 0 and (any(True for _ in sub.children()) or sub is module):
            continue  # containers: their layers get rows of their own
        rows.append((name or "(model)", type(sub).__name__, f"{own:,}", sub.extra_repr()))
    total, trainable = count_parameters(module, False), count_parameters(module)
    buffers = sum(b.numel() for b in module.buffers())
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip() for a, b, c, d in rows
    ]
    rule = "-" * max(len(line) for line in lines)
    lines[1:1] = [rule]
    lines += [
        rule,
        f"total params: {total:,}",
        f"trainable params: {trainable:,}",
        f"non-trainable params: {total - trainable:,}",
        # Keras counts BatchNorm's moving mean and variance as non-trainable params
        f"buffers (BatchNorm statistics, Standardize): {buffers:,}",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "REGISTRY",
    "ModelSpec",
    "Standardize",
    "build_baseline",
    "build_model",
    "count_parameters",
    "default_options",
    "get_spec",
    "is_sklearn",
    "model_summary",
    "resolved_options",
    "check_options",
]
