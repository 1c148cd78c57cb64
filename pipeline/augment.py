"""Batched tensor augmentations for training batches that already live on the device.

Every transform works on a whole (B, 1, 28, 28) float32 batch of RAW pixels (0..255; the
model normalises later) with one kernel per step: no per-sample Python loop, no PIL, no
host round trip. The random affine transforms (rotate, shift, zoom, shear) are composed
into one matrix per image and applied with a single `F.affine_grid` + `F.grid_sample`
call; `erase` then blanks one random rectangle per image (random erasing / Cutout), a
masked fill. All randomness comes from one `torch.Generator` owned by an `Augmenter`,
whose state is saved with checkpoints so a resumed run continues the same random stream.

Conventions (pinned by tests/test_augment.py): pixel (0, 0) is top left, x points right
and y points down; a positive shift moves content right/down; a positive angle turns
content clockwise on screen; a zoom scale > 1 enlarges content. Rotation and shear ranges
are symmetric, so their sign only matters to someone calling `affine_theta` directly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config import AUGMENTATIONS

# Ranges of the Keras ImageDataGenerator settings used by the reference reports
# (rotation_range=10, width/height_shift_range=0.1, zoom_range=0.1), plus a matching shear.
DEFAULT_MAGNITUDES = {
    "rotate": 10.0,  # degrees, angle drawn uniformly in [-10, 10]
    "shift": 0.1,  # fraction of width/height, offset drawn uniformly in [-0.1, 0.1]
    "zoom": 0.1,  # scale drawn uniformly in [1 - 0.1, 1 + 0.1], same for x and y
    "shear": 10.0,  # degrees of horizontal shear, drawn uniformly in [-10, 10]
    # Random erasing (Zhong et al. 2017, who report it on Fashion-MNIST too): the share of
    # images that get one rectangle set to 0 (the background), covering ERASE_AREA of the
    # image with an aspect ratio in ERASE_ASPECT. Zero fill rather than noise: on these
    # images 0 is the background, so an erased patch looks like a hidden part of the item.
    "erase": 0.5,
}
ERASE_AREA = (0.02, 0.25)  # share of the image (before the sides are rounded)
ERASE_ASPECT = (0.3, 3.3)  # height / width, drawn log-uniformly
AFFINE = tuple(name for name in AUGMENTATIONS if name != "erase")  # one grid_sample


def hflip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability `p`, independently per image."""
    # (B,) bool, drawn on the generator's device so CUDA batches never sync with the host
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < p
    # (B, 1, 28, 28) float32: exact mirrors where flipped, the input elsewhere
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def affine_theta(
    angle_deg: Tensor, shift_px: Tensor, scale: Tensor, shear_deg: Tensor, height: int, width: int
) -> Tensor:
    """Per-image `F.affine_grid` matrices for rotate . shear . zoom about the centre, then shift.

    angle_deg, scale, shear_deg: (B,); shift_px: (B, 2) as (dx, dy) in pixels.
    Returns (B, 2, 3): output coordinates -> input coordinates, normalised to [-1, 1].
    """
    angle, shear = torch.deg2rad(angle_deg), torch.tan(torch.deg2rad(shear_deg))
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    # grid_sample pulls pixels, so we need the inverse of the forward map M = R @ Sh * scale:
    # M^-1 = Sh^-1 @ R^-1 / scale, written out instead of a batched linalg.inv.
    rot_inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    shear_inv = torch.stack([torch.stack([one, -shear], -1), torch.stack([zero, one], -1)], -2)
    m_inv = shear_inv @ rot_inv / scale[:, None, None]  # (B, 2, 2), pixel units
    # With align_corners=False a normalised unit is half the image: one pixel = 2 / W, so
    # conjugating by diag(W/2, H/2) keeps rotations round on non-square images too.
    half = _constant((width / 2, height / 2), m_inv.device, m_inv.dtype)
    linear = m_inv * (half[None, :] / half[:, None])  # (B, 2, 2), normalised units
    offset = -(m_inv @ shift_px.to(m_inv)[..., None]).squeeze(-1) / half  # (B, 2)
    return torch.cat([linear, offset[..., None]], -1)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor on the device, made once: `torch.tensor(..., device=cuda)`
    copies from the host and waits for the GPU to catch up, twice a training step before.
    (On the H200 that made no measurable difference, since a step there is bound by its
    kernel launches either way; docs/gpu.md.)"""
    return torch.tensor(values, device=device, dtype=dtype)


def warp(x: Tensor, theta: Tensor) -> Tensor:
    """Resample a batch through per-image affine matrices (bilinear, zeros outside)."""
    # align_corners=False on both calls: pixel centres sit at -1 + (2i + 1) / W, so an
    # identity theta samples every pixel exactly and whole-pixel shifts stay exact.
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, 28, 28, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Bilinear weights are a convex combination, but rounding may step a hair past 255.
    return out.clamp_(0.0, 255.0)  # (B, 1, 28, 28) float32


def _symmetric(generator: torch.Generator, shape: tuple[int, ...], bound: float) -> Tensor:
    """Uniform draws in [-bound, bound]; no draw at all for a disabled (zero) range."""
    if bound == 0:
        return torch.zeros(shape, device=generator.device)
    u = torch.rand(shape, generator=generator, device=generator.device)
    return (2 * u - 1) * bound


def random_affine(
    x: Tensor,
    generator: torch.Generator,
    rotate: float = 10.0,
    shift: float = 0.1,
    zoom: float = 0.1,
    shear: float = 10.0,
) -> Tensor:
    """Random rotate/shift/zoom/shear per image in one resampling; 0 disables a transform.

    Ranges are in the units of DEFAULT_MAGNITUDES. x: (B, 1, H, W) float32, raw 0..255.
    """
    b, _, h, w = x.shape
    size = _constant((w, h), generator.device, torch.float32)
    theta = affine_theta(
        angle_deg=_symmetric(generator, (b,), rotate),
        shift_px=_symmetric(generator, (b, 2), shift) * size,
        scale=1 + _symmetric(generator, (b,), zoom),
        shear_deg=_symmetric(generator, (b,), shear),
        height=h,
        width=w,
    )
    return warp(x, theta.to(x.dtype))


def random_erase(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """With probability `p` per image, set one random rectangle to 0 (see ERASE_AREA).

    x: (B, 1, H, W) float32. One mask for the whole batch, no per-image loop.
    """
    b, _, h, w = x.shape

    def uniform(low: float, high: float) -> Tensor:  # (B,) draws in [low, high)
        return low + (high - low) * torch.rand(b, generator=generator, device=generator.device)

    area = uniform(*ERASE_AREA) * (h * w)
    aspect = uniform(*(math.log(a) for a in ERASE_ASPECT)).exp()
    height = (area * aspect).sqrt().round().clamp(1, h)  # (B,) rectangle sides in pixels
    width = (area / aspect).sqrt().round().clamp(1, w)
    top = (uniform(0, 1) * (h - height + 1)).floor()  # (B,) every placement equally likely
    left = (uniform(0, 1) * (w - width + 1)).floor()
    erase = uniform(0, 1) < p  # (B,)
    rows = torch.arange(h, device=generator.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=generator.device)[None, None, :]  # (1, 1, W)
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + height)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + width)[:, None, None])
    )  # (B, H, W)
    return x.masked_fill((inside & erase[:, None, None])[:, None], 0.0)


class Augmenter:
    """The training-batch augmentation: optional flip, the enabled affine transforms, then
    random erasing.

    Owns its generator so checkpoints can save and restore the random stream.
    """

    def __init__(
        self, flip: bool, magnitudes: Mapping[str, float], seed: int, device: torch.device | str
    ) -> None:
        self.flip = flip
        # split once here, not on every training batch: one grid_sample, then the mask
        self.affine = {name: float(magnitudes.get(name, 0.0)) for name in AFFINE}
        self.erase = float(magnitudes.get("erase", 0.0))  # share of images erased
        self.seed = seed
        # A CUDA generator for CUDA batches: draws happen on the device, no host sync.
        self.generator = torch.Generator(device=torch.device(device)).manual_seed(seed)

    def __call__(self, x: Tensor) -> Tensor:
        """Augment one (B, 1, 28, 28) float32 batch on the generator's device."""
        if self.flip:
            x = hflip(x, self.generator)
        if any(self.affine.values()):
            x = random_affine(x, self.generator, **self.affine)
        if self.erase:
            x = random_erase(x, self.generator, self.erase)
        return x

    def state_dict(self) -> dict[str, Tensor | int]:
        """Tensors and ints only, so `torch.load(..., weights_only=True)` reads it back."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor | int]) -> None:
        """Continue the random stream saved by `state_dict`."""
        generator_state = state["generator"]
        assert isinstance(generator_state, Tensor)
        # get_state is a CPU uint8 tensor for CPU and CUDA generators alike; set_state
        # refuses any other device, and a checkpoint may have been loaded with map_location.
        self.generator.set_state(generator_state.to("cpu", torch.uint8))


def make_augmenter(
    flip: bool, augment: tuple[str, ...], seed: int, device: torch.device | str
) -> Augmenter:
    """Build the augmenter for `TrainConfig.flip` / `.augment`, default ranges.

    With nothing enabled it returns its input unchanged (still with a state_dict, so
    checkpoints look the same either way).
    """
    unknown = sorted(set(augment) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(
            f"unknown augmentation {', '.join(unknown)}; valid names: {', '.join(AUGMENTATIONS)}"
        )
    magnitudes = {name: DEFAULT_MAGNITUDES[name] for name in augment}
    return Augmenter(flip, magnitudes, seed, device)
