"""The model zoo: every registered model once (shape, finite logits, gradients), the
parameter counts the reference reports print, option checking, dropout overrides and the
scikit-learn baselines' fit / predict_proba / pickling. About 15 s on 2 CPU cores."""

from __future__ import annotations

import copy
import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import config
from pipeline.models import (
    REGISTRY,
    Standardize,
    build_baseline,
    build_model,
    count_parameters,
    default_options,
    is_sklearn,
    model_summary,
)


def raw_images(batch: int) -> torch.Tensor:
    """Random float32 pixels on the raw 0..255 scale, (B, 1, 28, 28)."""
    return torch.randint(0, 256, (batch, *config.IMAGE_SHAPE), dtype=torch.uint8).float()


def check_forward_backward(model: nn.Module, batch: int) -> None:
    logits = model(raw_images(batch))
    assert logits.shape == (batch, config.NUM_CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.arange(batch) % config.NUM_CLASSES).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("name", config.TORCH_MODEL_NAMES)
def test_torch_model(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name)
    first = next(model.children())
    assert isinstance(first, Standardize), "models must standardise raw pixels themselves"
    assert not list(first.parameters())  # mean and std are buffers, never trained
    check_forward_backward(model, batch=3)
    with torch.no_grad():  # a logged model takes any N (INTERFACE.md), none included
        assert model.eval()(raw_images(0)).shape == (0, config.NUM_CLASSES)


# Variants a report describes, run through the same checks (B=2 keeps BatchNorm happy).
VARIANTS = [
    ("mlp", {"hidden": (100,)}),
    ("lenet5", {"classic": True}),
    ("cnn2", {"filters": (64, 128), "dense": (32,)}),  # report 000, CNN test 3
    ("cnn2", {"filters": [32, 32], "dense": [512, 128], "batchnorm": True}),  # 003, JSON lists
    ("cnn3", {"padded": True}),
    ("cnn4", {"padded": True}),
    ("mini_resnet", {"blocks": 4}),  # report 000, test 2
    ("vgg", {"channels": (32, 64), "batchnorm": False}),
    ("lstm", {"layers": 2, "dense": ()}),
    ("fastnet", {"widths": [32, 64], "depth": 2, "tta": False}),  # JSON list, 2 blocks
    ("fastnet", {"widths": (8, 16, 32, 64, 128)}),  # 5 blocks: 28 -> 14 -> 7 -> 3 -> 1
]


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=lambda v: str(v))
def test_variant(name: str, options: dict) -> None:
    torch.manual_seed(0)
    check_forward_backward(build_model(name, **options), batch=2)


def test_resnet18_resize_shape() -> None:
    """Report 004's setup (upsample to 224, 7x7/2 stem): a shape check only, B=1, eval."""
    model = build_model("resnet18", resize=224).eval()
    with torch.no_grad():
        assert model(raw_images(1)).shape == (1, config.NUM_CLASSES)


# (name, options, trainable parameters, BatchNorm moving mean + variance) from the reports'
# Keras tables: report 002 prints both (its "non-trainable params"); LeCun 1998 the classic.
REPORTED_COUNTS = [
    ("cnn1", {}, 693_962, 0),
    ("lenet5", {}, 136_586, 0),
    ("lenet5", {"classic": True}, 61_706, 0),
    ("cnn4", {}, 1_219_754, 1_792),
    ("cnn4", {"padded": True}, 3_382_442, 1_792),
]


# Counts stated by our own families' docstrings (fastnet: the CPU recipe's default net).
STATED_COUNTS = [
    ("fastnet", {}, 401_978, 2 * (16 + 64 + 128 + 256)),
]


@pytest.mark.parametrize(
    ("name", "options", "trainable", "bn_stats"), REPORTED_COUNTS + STATED_COUNTS
)
def test_reported_parameter_counts(name: str, options: dict, trainable: int, bn_stats: int) -> None:
    model = build_model(name, **options)
    assert count_parameters(model) == trainable
    stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    assert stats == bn_stats


def test_count_parameters_trainable_only() -> None:
    model = build_model("cnn1")
    model.features[0].requires_grad_(False)  # the 320-weight conv
    assert count_parameters(model) == 693_962 - 320
    assert count_parameters(model, trainable_only=False) == 693_962


def test_model_summary() -> None:
    text = model_summary(build_model("cnn4"))
    assert "classifier.1" in text and "1,049,088" in text  # report 002's dense_4 row
    assert "trainable params: 1,219,754" in text
    assert text.count("Conv2d") == 4


def test_registry_matches_config() -> None:
    assert tuple(REGISTRY) == config.TORCH_MODEL_NAMES + config.SKLEARN_MODEL_NAMES
    assert all(REGISTRY[n].kind == "torch" for n in config.TORCH_MODEL_NAMES)
    assert all(is_sklearn(n) for n in config.SKLEARN_MODEL_NAMES)
    assert all(spec.name == name for name, spec in REGISTRY.items())
    assert REGISTRY["svc"].default_subset > 0  # the kernel SVM cannot fit 54k images quickly
    assert default_options("mini_resnet") == {"blocks": 3, "width": 64}


INVALID = [
    (lambda: build_model("resnet"), "choose one of: mlp, cnn1"),
    (lambda: is_sklearn("svm"), "choose one of"),
    (lambda: build_model("mini_resnet", blcks=4), "valid options: blocks, width"),
    (lambda: build_model("cnn1", filters=(8,)), "valid options: none"),
    (lambda: build_model("mini_resnet", blocks=0), "integer >= 1"),
    (lambda: build_model("mini_resnet", blocks=True), "integer >= 1"),
    (lambda: build_model("cnn2", filters=(32,)), "exactly 2"),
    (lambda: build_model("cnn2", dense="64"), "list of positive integers"),
    (lambda: build_model("cnn4", padded="yes"), "true or false"),
    (lambda: build_model("vgg", channels=(8, 8, 8, 8, 8)), "1 to 4 stages"),
    (lambda: build_model("resnet18", resize=16), "0 or >= 32"),
    (lambda: build_model("fastnet", widths=(16,)), "2 to 5 blocks"),
    (lambda: build_model("fastnet", depth=0), "integer >= 1"),
    (lambda: build_model("fastnet", tta="yes"), "true or false"),
    (lambda: build_model("cnn1", dropout=1.0), "in [0, 1)"),
    (lambda: build_model("lstm", dropout=-0.1), "lstm' must be a number in [0, 1)"),
    (lambda: build_model("svc"), "build_baseline"),
    (lambda: build_baseline("cnn1", seed=0), "build_model"),
    (lambda: build_baseline("svc", seed=0, gamma=0.1), "valid options: C"),
    (lambda: build_baseline("logreg", seed=0, C=0), "number > 0"),
]


@pytest.mark.parametrize(("call", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_name_or_option(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        call()
    assert "\n" not in str(err.value)  # one line: the step prints it as `error: ...`


def test_fastnet_flip_tta() -> None:
    """Eval mode averages the logits of x and its mirror image; train mode is plain."""
    torch.manual_seed(0)
    model = build_model("fastnet", widths=(8, 16, 32)).eval()
    plain = build_model("fastnet", widths=(8, 16, 32), tta=False).eval()
    plain.load_state_dict(model.state_dict())
    x = raw_images(5)
    with torch.no_grad():
        expected = (plain(x) + plain(x.flip(-1))) / 2
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        mirrored = model(x.flip(-1))  # TTA makes the prediction mirror-invariant
        torch.testing.assert_close(mirrored, model(x), rtol=1e-5, atol=1e-5)
    model.train(), plain.train()
    torch.testing.assert_close(model(x), plain(x))  # train mode: one plain forward, no TTA


def test_fastnet_exports_in_eval_mode() -> None:
    """Logged models are pt2 (torch.export) files: the TTA branch must trace."""
    model = build_model("fastnet").eval()
    exported = torch.export.export(model, (torch.zeros(8, 1, 28, 28),))
    x = raw_images(8)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


def dropout_rates(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("name", config.TORCH_MODEL_NAMES)
def test_dropout_override(name: str) -> None:
    assert dropout_rates(build_model(name)), f"{name} has no dropout layer to override"
    rates = dropout_rates(build_model(name, dropout=0.375))
    # one rate everywhere, or (cnn3, cnn4) the report's schedule scaled so its top is 0.375
    assert max(rates) == pytest.approx(0.375)
    assert min(rates) > 0
    assert set(dropout_rates(build_model(name, dropout=0.0))) == {0.0}


@pytest.mark.parametrize("name", config.TORCH_MODEL_NAMES)
def test_default_dropout_is_the_rate_that_builds_the_default_model(name: str) -> None:
    """tune's first trial (space=wide searches dropout) starts from this rate."""
    from pipeline.models import default_dropout

    rate = default_dropout(name)
    assert rate == max(dropout_rates(build_model(name)))
    assert repr(build_model(name, dropout=rate)) == repr(build_model(name))
    assert default_dropout("cnn3") == 0.5 and default_dropout("lenet5") == 0.0


def test_dropout_schedules() -> None:
    assert dropout_rates(build_model("cnn3")) == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert dropout_rates(build_model("cnn3", dropout=0.25)) == pytest.approx([0.1, 0.15, 0.2, 0.25])
    assert dropout_rates(build_model("cnn4", dropout=0.4)) == pytest.approx([0.2] * 3 + [0.4] * 2)
    assert build_model("lstm", dropout=0.3, layers=2).lstm.dropout == 0.3


@pytest.fixture(scope="module")
def tiny_set() -> tuple[np.ndarray, np.ndarray]:
    """60 raw float32 images, 6 per class, with class-dependent brightness to learn from."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(config.NUM_CLASSES), 6)
    x = (
        rng.integers(0, 128, (60, *config.IMAGE_SHAPE)).astype(np.float32)
        + 12 * y[:, None, None, None]
    )
    return x, y


# lbfgs stops at max_iter on 60 separable images: expected here, not a failure
NOT_CONVERGED = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@NOT_CONVERGED
@pytest.mark.parametrize("name", config.SKLEARN_MODEL_NAMES)
def test_sklearn_baseline(name: str, tiny_set) -> None:
    x, y = tiny_set
    model = build_baseline(name, seed=0).fit(x, y)
    proba = model.predict_proba(x)
    assert proba.shape == (60, config.NUM_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    blob = pickle.dumps(model)
    assert b"pipeline.models" not in blob  # loads without this package installed
    np.testing.assert_allclose(pickle.loads(blob).predict_proba(x), proba)


@NOT_CONVERGED
def test_sklearn_baseline_skops(tiny_set) -> None:
    """MLflow's default sklearn format: only numpy and scikit-learn types to trust."""
    import skops.io as skops_io  # a declared dependency: never skipped

    x, y = tiny_set
    model = build_baseline("logreg", seed=0).fit(x, y)
    blob = skops_io.dumps(model)
    untrusted = skops_io.get_untrusted_types(data=blob)
    assert all(t.startswith(("numpy.", "sklearn.")) for t in untrusted), untrusted
    loaded = skops_io.loads(blob, trusted=untrusted)
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x))


def test_baselines_are_seeded(tiny_set) -> None:
    x, y = tiny_set
    a, b = (build_baseline("random_forest", seed=7).fit(x, y) for _ in range(2))
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    other = build_baseline("random_forest", seed=8).fit(x, y)  # the seed is used, too
    assert not np.array_equal(a.predict_proba(x), other.predict_proba(x))


@pytest.mark.parametrize("name", ["lenet5", "cnn1"])
def test_pool_before_relu_is_the_keras_order_function(name: str) -> None:
    """lenet5 and cnn1 max-pool before their ReLU (faster, see pipeline/models/cnn.py): the
    same outputs and gradients as the reports' conv -> ReLU -> pool order, and the state
    dict keys are those of that order."""
    torch.manual_seed(0)
    ours = build_model(name, dropout=0.0)
    keras = copy.deepcopy(ours)
    layers = list(keras.features)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layer
    assert [type(m) for m in layers] != [type(m) for m in ours.features]  # really reordered
    keras.features = nn.Sequential(*layers)
    assert list(keras.state_dict()) == list(ours.state_dict())
    x = torch.randint(0, 256, (8, 1, 28, 28)).float()
    y = torch.randint(0, 10, (8,))
    outputs = []
    for model in (ours, keras):
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
        outputs.append((out, [p.grad for p in model.parameters()]))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outputs[0][1], outputs[1][1], strict=True))
