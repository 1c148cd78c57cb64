"""fastnet: a small BatchNorm CNN designed for time-to-accuracy on 28x28 images.

Ideas taken from airbench (CIFAR-10 in seconds) and the "MNIST 99% in under a second"
study, measured again on this project's 2-core CPU (the recipe search: its summary is the
CPU recipe's comment in bench/time_to_accuracy.py, its notes docs/fastnet_search.md):

- narrow where the image is large: the only 28x28 layer has 1 -> 16 channels; width
  grows as the image shrinks (28 -> 14 -> 7 -> 3);
- pool first: each block is conv3x3 -> 2x2 max-pool -> BatchNorm -> ReLU, so BatchNorm and
  ReLU run on a quarter of the pixels (about 1.35x faster than pooling last, NOTES.md);
- no conv bias (BatchNorm's shift replaces it), channels_last friendly (the engine
  converts every conv model), no dropout by default (the recipe search used none);
- flip test-time augmentation (`tta`): in eval mode forward() averages the logits of the
  image and its mirror image, one forward pass of a doubled batch. In train mode it is
  a plain forward. The engine's validation, a logged pt2 model and `evaluate` therefore
  all score the same way without any extra plumbing. Train with `flip=true` when TTA is
  on: a net trained without flips scored 88.8% validation with flip TTA and 94.1% without
  (the engine warns about this combination).

Width and depth are options, so the same family serves the GPU recipe with wider layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline import config
from pipeline.models.layers import Standardize, check_bool, check_dropout, check_int, check_ints


def _block(c_in: int, c_out: int, pool: bool, depth: int) -> nn.Sequential:
    """conv3x3 [-> max-pool] -> BN -> ReLU, then depth - 1 more conv3x3 -> BN -> ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    for _ in range(depth - 1):
        layers += [
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class FastNet(nn.Module):
    """Standardize -> blocks (28 -> 14 -> 7 -> 3) -> flatten -> dropout -> linear."""

    def __init__(self, widths: tuple[int, ...], depth: int, dropout: float, tta: bool) -> None:
        super().__init__()
        self.standardize = Standardize()  # first child: raw 0..255 pixels in
        blocks, c_in, side = [], 1, 28
        for i, c_out in enumerate(widths):
            pool = i < len(widths) - 1  # the last block keeps its (small) image
            blocks.append(_block(c_in, c_out, pool, 1 if i == 0 else depth))
            c_in, side = c_out, side // 2 if pool else side
        self.features = nn.Sequential(*blocks)  # (B, widths[-1], side, side)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * side * side, config.NUM_CLASSES)
        )
        self.tta = tta

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.standardize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) raw -> (B, 10)
        if self.training or not self.tta:
            return self.logits(x)
        # flip TTA: one pass over (2B, 1, 28, 28), then the mean of the two halves' logits
        both = self.logits(torch.cat([x, x.flip(-1)]))
        n = x.shape[0]  # halves by slicing: chunk(2) of an empty batch divides by zero
        return (both[:n] + both[n:]) / 2

    def extra_repr(self) -> str:
        return f"tta={self.tta}"


def build_fastnet(
    *,
    dropout: float | None = None,
    widths: Sequence[int] = (16, 64, 128, 256),
    depth: int = 1,
    tta: bool = True,
) -> nn.Module:
    """fastnet: one block per entry of `widths`; all but the last halve the image.

    widths: channels per block, 2 to 5 blocks (28 -> 14 -> 7 -> 3 -> 1). The default
    (16, 64, 128, 256), 401,978 trainable parameters, is the CPU recipe's net (93.22% test
    after 5 epochs, about 100 s on 2 CPU cores; bench/time_to_accuracy.py). depth: conv
    layers per block after the first block (1 = the cheapest net; the GPU recipe uses 2
    with wider blocks: 94.24% test on an H200, docs/gpu.md). tta: average the logits of
    each image and its mirror image in eval mode (train with flip=true).
    dropout: None = 0 (the recipe search used none); p drops features before the head.
    """
    p = check_dropout("fastnet", 0.0 if dropout is None else dropout)
    widths = check_ints("fastnet", "widths", widths)
    if not 2 <= len(widths) <= 5:
        raise ValueError(f"option 'widths' of 'fastnet' takes 2 to 5 blocks, got {widths!r}")
    depth = check_int("fastnet", "depth", depth)
    tta = check_bool("fastnet", "tta", tta)
    return FastNet(widths, depth, p, tta)
