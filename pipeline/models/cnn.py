"""Plain convolutional networks from the reference reports: cnn1, lenet5, cnn2, cnn3, cnn4, vgg.

Layer order follows the reports' Keras models, where the activation lives inside Conv2D /
Dense and BatchNormalization comes after it: conv -> ReLU -> BatchNorm -> pool -> dropout.
One exception, the same function: where a ReLU is followed directly by a max-pool (lenet5,
cnn1) the pool comes first. Both are monotone, so max(relu(x)) = relu(max(x)), gradients
included, and the ReLU (forward and backward) runs on a quarter of the values: lenet5
trains 1.26x faster on the CPU (bench/bench_train.py, bf16). The parameterised layers keep
their indices, so state dicts are unchanged.
Kernel sizes, widths and paddings reproduce the reports' layer tables, so parameter counts
match theirs (BatchNorm's running statistics are buffers here, Keras's "non-trainable
params"). All take raw (B, 1, 28, 28) pixels and return (B, 10) logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pipeline import config
from pipeline.models.layers import (
    BLACK,
    Standardize,
    check_bool,
    check_dropout,
    check_ints,
    dense_stack,
    named,
    scaled_rates,
)

NUM_CLASSES = config.NUM_CLASSES


def _conv(c_in: int, c_out: int, pad: int, batchnorm: bool) -> list[nn.Module]:
    """3x3 conv -> ReLU [-> BatchNorm], the Keras `Conv2D(activation="relu")` + BN unit."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=pad), nn.ReLU()]
    return layers + [nn.BatchNorm2d(c_out)] if batchnorm else layers


def build_cnn1(*, dropout: float | None = None) -> nn.Module:
    """Report 002's 1-layer CNN: 32 3x3 filters, 2x2 max-pool, dropout, dense 128.

    693,962 parameters, as its layer table. dropout: None = 0.25 (the table has one
    Dropout after the pool but no rate; 0.25 is the Keras MNIST example's rate there).
    """
    p = check_dropout("cnn1", 0.25 if dropout is None else dropout)
    features = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Dropout(p)
    )  # (B, 32, 13, 13); pool before ReLU: the same function, see the module docstring
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(32 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES)
    )
    return named(standardize=Standardize(), features=features, classifier=classifier)


def build_lenet5(*, dropout: float | None = None, classic: bool = False) -> nn.Module:
    """LeNet-5 on the image padded to 32x32 (LeCun's input size) with black.

    Default: report 002's Keras variant (136,586 parameters, 92.11%): 'same' 5x5 convs so
    conv1 gives 32x32x6, ReLU, max-pool, dense 120-84-10.
    classic=True: LeCun's 1998 layout, 'valid' convs (28x28x6, then 10x10x16), tanh and
    average pooling, 61,706 parameters (C3 fully connected, no RBF output layer).
    dropout: None = 0 (neither version has dropout); p adds it after both hidden dense layers.
    """
    p = check_dropout("lenet5", 0.0 if dropout is None else dropout)
    classic = check_bool("lenet5", "classic", classic)
    act, pool, pad = (nn.Tanh, nn.AvgPool2d, 0) if classic else (nn.ReLU, nn.MaxPool2d, 2)
    side = 5 if classic else 8  # spatial size after the second pool

    def unit() -> list[nn.Module]:
        # max-pool and ReLU commute (module docstring); tanh and average pooling do not
        return [act(), pool(2)] if classic else [pool(2), act()]

    features = nn.Sequential(
        nn.ConstantPad2d(2, BLACK),  # (B, 1, 32, 32)
        nn.Conv2d(1, 6, 5, padding=pad), *unit(),  # (B, 6, 16, 16) | classic 14x14
        nn.Conv2d(6, 16, 5, padding=pad), *unit(),  # (B, 16, 8, 8) | classic 5x5
    )  # fmt: skip
    classifier = nn.Sequential(
        nn.Flatten(),
        *dense_stack((120, 84), 16 * side * side, p, activation=act)[0],
        nn.Linear(84, NUM_CLASSES),
    )
    return named(standardize=Standardize(), features=features, classifier=classifier)


def build_cnn2(
    *,
    dropout: float | None = None,
    filters: Sequence[int] = (32, 64),
    dense: Sequence[int] = (64,),
    batchnorm: bool = False,
) -> nn.Module:
    """Two 'same' 3x3 conv layers, each ReLU [-> BatchNorm] -> 2x2 max-pool -> dropout, then
    dense layers.

    Default: report 000's "CNN test 1" (32/64 filters, dense 64; 220,234 parameters), the
    cheapest of its nets and the pipeline's default model. Its other nets: filters=(64, 128)
    with dense=(64,) (its best CNN) or dense=(32,). Report 003's CNN: filters=(32, 32),
    dense=(512, 128), batchnorm=True (003 names no pooling; we pool after each conv so the
    first dense layer stays at 0.8M weights instead of 9.4M).
    dropout: None = 0.25 after each conv block and hidden dense layer (report 000 gives no
    rate; 0.25 is the Keras MNIST example's).
    """
    p = check_dropout("cnn2", 0.25 if dropout is None else dropout)
    filters = check_ints("cnn2", "filters", filters)
    if len(filters) != 2:
        raise ValueError(f"option 'filters' of 'cnn2' needs exactly 2 values, got {filters!r}")
    dense = check_ints("cnn2", "dense", dense, allow_empty=True)
    batchnorm = check_bool("cnn2", "batchnorm", batchnorm)
    layers: list[nn.Module] = []
    c_in = 1
    for c_out in filters:  # 28 -> 14 -> 7
        layers += [*_conv(c_in, c_out, 1, batchnorm), nn.MaxPool2d(2), nn.Dropout(p)]
        c_in = c_out
    hidden, width = dense_stack(dense, c_in * 7 * 7, p, batchnorm)
    classifier = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(width, NUM_CLASSES))
    return named(standardize=Standardize(), features=nn.Sequential(*layers), classifier=classifier)


def build_cnn3(*, dropout: float | None = None, padded: bool = False) -> nn.Module:
    """Report 001's net: 64/128/256 3x3 filters, each ReLU -> BatchNorm -> max-pool ->
    dropout 0.2/0.3/0.4, then dense 128 -> BatchNorm -> dropout 0.5.

    padded: False = Keras's default 'valid' convs (001 names no padding): 28 -> 13 -> 5 -> 1,
    405,002 trainable parameters; True = 'same' convs, 28 -> 14 -> 7 -> 3, 667,146.
    dropout: None = the report's rates; p scales them so the dense layer's becomes p and the
    conv rates keep their 0.4/0.6/0.8 ratio to it (p=0.5 gives the report's rates).
    """
    p = check_dropout("cnn3", 0.5 if dropout is None else dropout)
    rates = scaled_rates(None if dropout is None else p, (0.2, 0.3, 0.4, 0.5))
    pad = int(check_bool("cnn3", "padded", padded))
    layers: list[nn.Module] = []
    c_in = 1
    for c_out, rate in zip((64, 128, 256), rates, strict=False):
        layers += [*_conv(c_in, c_out, pad, True), nn.MaxPool2d(2), nn.Dropout(rate)]
        c_in = c_out
    side = 3 if pad else 1
    hidden, width = dense_stack((128,), 256 * side * side, rates[3], batchnorm=True)
    classifier = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(width, NUM_CLASSES))
    return named(standardize=Standardize(), features=nn.Sequential(*layers), classifier=classifier)


def build_cnn4(*, dropout: float | None = None, padded: bool = False) -> nn.Module:
    """Report 002's 4-conv net: 32-32-pool-64-128-pool, BatchNorm after every conv and dense
    layer, dense 512-128, dropout after both pools, conv 3 and both dense layers.

    padded: False = its first table, 1,219,754 trainable parameters (28 -> 24 -> 12 -> 8 ->
    4); True = its 'same'-padded table, 3,382,442 (28 -> 14 -> 7).
    dropout: None = 0.25 after the convolutional blocks and 0.5 after the dense layers (002
    gives no rates; these are the Keras examples' usual ones); p scales them as in cnn3, so
    the dense layers get p and the conv blocks p/2.
    """
    p = check_dropout("cnn4", 0.5 if dropout is None else dropout)
    conv_p, dense_p = scaled_rates(None if dropout is None else p, (0.25, 0.5))
    pad = int(check_bool("cnn4", "padded", padded))
    features = nn.Sequential(
        *_conv(1, 32, pad, True), *_conv(32, 32, pad, True), nn.MaxPool2d(2), nn.Dropout(conv_p),
        *_conv(32, 64, pad, True), nn.Dropout(conv_p),
        *_conv(64, 128, pad, True), nn.MaxPool2d(2), nn.Dropout(conv_p),
    )  # fmt: skip
    side = 7 if pad else 4
    hidden, width = dense_stack((512, 128), 128 * side * side, dense_p, batchnorm=True)
    classifier = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(width, NUM_CLASSES))
    return named(standardize=Standardize(), features=features, classifier=classifier)


def build_vgg(
    *,
    dropout: float | None = None,
    channels: Sequence[int] = (64, 128, 256),
    batchnorm: bool = True,
) -> nn.Module:
    """VGG-style (report 004): stages of two 'same' 3x3 conv [-> BatchNorm] -> ReLU and a
    2x2 max-pool, then a dense 512 -> dropout -> 10 classifier.

    channels: one stage per entry; (64, 128, 256) takes 28 -> 14 -> 7 -> 3, VGG's first three
    stages, which is as deep as a 28x28 image supports at VGG's widths (about 2.33M
    parameters, 1/60 of VGG-11; its 4096-wide dense layers shrink to 512 for the same reason).
    batchnorm: True, torchvision's vgg*_bn order (conv -> BN -> ReLU); 004 gives no details.
    dropout: None = 0.5, VGG's classifier dropout.
    """
    p = check_dropout("vgg", 0.5 if dropout is None else dropout)
    channels = check_ints("vgg", "channels", channels)
    if len(channels) > 4:  # 28 -> 14 -> 7 -> 3 -> 1: a fifth pool would leave nothing
        raise ValueError(f"option 'channels' of 'vgg' takes 1 to 4 stages, got {channels!r}")
    batchnorm = check_bool("vgg", "batchnorm", batchnorm)
    layers: list[nn.Module] = []
    c_in = 1
    for c_out in channels:
        for _ in range(2):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            layers += [nn.BatchNorm2d(c_out), nn.ReLU()] if batchnorm else [nn.ReLU()]
            c_in = c_out
        layers.append(nn.MaxPool2d(2))
    side = 28 >> len(channels)
    classifier = nn.Sequential(
        nn.Flatten(),
        *dense_stack((512,), c_in * side * side, p)[0],
        nn.Linear(512, NUM_CLASSES),
    )
    return named(standardize=Standardize(), features=nn.Sequential(*layers), classifier=classifier)
