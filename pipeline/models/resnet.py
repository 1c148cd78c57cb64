"""Residual networks: report 000's Mini ResNet and report 004's torchvision ResNet-18.

Both reuse torchvision's ResNet pieces (BasicBlock, resnet18) so the residual blocks are the
well-tested originals; torchvision is imported inside the builders to keep
`import pipeline.models` cheap.
"""

from __future__ import annotations

from torch import nn

from pipeline import config
from pipeline.models.layers import Standardize, check_dropout, check_int, named


def _stem_conv(kernel: int, stride: int) -> nn.Conv2d:
    """A 1-channel input conv initialised like torchvision's own conv1 (Kaiming, fan_out)."""
    conv = nn.Conv2d(1, 64, kernel, stride=stride, padding=kernel // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def build_mini_resnet(
    *, dropout: float | None = None, blocks: int = 3, width: int = 64
) -> nn.Module:
    """Stem (3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool, 28 -> 14) then `blocks` residual
    blocks of `width` filters (two 3x3 conv + BatchNorm each, identity shortcut), global
    average pool, dropout, dense 10.

    blocks: 3 = report 000's "Mini ResNet test 1" (223,306 parameters); 4 is its test 2,
    the model it recommends. width: 64, its filter count. The pooled stem makes it 4x
    cheaper than working at 28x28 (../shared/NOTES.md measures 68 images/s eager on CPU).
    dropout: None = 0 (000 uses none); p drops features before the dense layer.
    """
    from torchvision.models.resnet import BasicBlock

    p = check_dropout("mini_resnet", 0.0 if dropout is None else dropout)
    blocks = check_int("mini_resnet", "blocks", blocks)
    width = check_int("mini_resnet", "width", width)
    stem = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )  # (B, width, 14, 14)
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(width, config.NUM_CLASSES)
    )
    return named(
        standardize=Standardize(),
        stem=stem,
        blocks=nn.Sequential(*(BasicBlock(width, width) for _ in range(blocks))),
        head=head,
    )


def build_resnet18(*, dropout: float | None = None, resize: int = 0) -> nn.Module:
    """torchvision's ResNet-18 (weights=None, 10 classes) with a 1-channel stem.

    resize: 0 = native 28x28 with the usual small-image stem (3x3 conv, stride 1, no
    max-pool: ImageNet's 7x7/2 conv + pool would shrink 28x28 to 7x7 before stage 1 and
    to 1x1 by stage 4); 11,172,810 parameters. N (>= 32) = report 004's setup: bilinear upsample
    to NxN (224 in 004) and the 7x7/2 stem with its max-pool, on 1 channel; 11,175,370
    parameters, 1.73 GMAC per image at 224 against 0.46 at native size.
    dropout: None = 0 (torchvision's ResNet has none); p drops features before `fc`.
    """
    from torchvision.models import resnet18

    p = check_dropout("resnet18", 0.0 if dropout is None else dropout)
    resize = check_int("resnet18", "resize", resize, low=0)
    if 0 < resize < 32:  # five stride-2 stages need at least 32 pixels
        raise ValueError(f"option 'resize' of 'resnet18' must be 0 or >= 32, got {resize}")
    net = resnet18(weights=None, num_classes=config.NUM_CLASSES)
    if resize:
        net.conv1 = _stem_conv(7, 2)
    else:
        net.conv1 = _stem_conv(3, 1)
        net.maxpool = nn.Identity()
    net.fc = nn.Sequential(nn.Dropout(p), net.fc)
    parts: dict[str, nn.Module] = {"standardize": Standardize()}
    if resize:  # standardise first: bilinear weights sum to 1, so the order does not matter
        parts["resize"] = nn.Upsample(size=(resize, resize), mode="bilinear", align_corners=False)
    return named(**parts, resnet=net)
