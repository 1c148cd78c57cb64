"""Tests for pipeline/augment.py: exact flips, affine conventions, seeding and resume."""

from __future__ import annotations

import io

import pytest
import torch

from pipeline.augment import (
    AFFINE,
    DEFAULT_MAGNITUDES,
    ERASE_AREA,
    ERASE_ASPECT,
    affine_theta,
    hflip,
    make_augmenter,
    random_affine,
    random_erase,
    warp,
)
from pipeline.config import AUGMENTATIONS


def _batch(n: int = 64, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """Random raw-pixel images: no symmetry, so every non-identity transform shows."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(device)  # (B, 1, 28, 28) float32


def _one_pixel(row: int, col: int) -> torch.Tensor:
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, row, col] = 255.0
    return x


def _pure_transform(
    angle: float = 0.0, dx: float = 0.0, dy: float = 0.0, scale: float = 1.0, shear: float = 0.0
) -> torch.Tensor:
    """One image's theta from exact parameters, no randomness."""
    return affine_theta(
        torch.tensor([angle]),
        torch.tensor([[dx, dy]]),
        torch.tensor([scale]),
        torch.tensor([shear]),
        height=28,
        width=28,
    )


def test_magnitudes_cover_the_config_names():
    assert tuple(DEFAULT_MAGNITUDES) == AUGMENTATIONS


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_hflip_mirrors_exactly_a_p_share_of_images(p):
    x = _batch(4000)
    y = hflip(x, torch.Generator().manual_seed(1), p=p)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)  # (B,) bool
    untouched = (y == x).flatten(1).all(1)
    assert (mirrored ^ untouched).all()  # each image exactly one or the other
    assert abs(mirrored.float().mean().item() - p) < 0.04  # ~5 standard deviations


def test_hflip_extremes():
    x = _batch(16)
    assert torch.equal(hflip(x, torch.Generator().manual_seed(0), p=0.0), x)
    assert torch.equal(hflip(x, torch.Generator().manual_seed(0), p=1.0), x.flip(-1))


@pytest.mark.parametrize("name", AFFINE)
def test_each_affine_keeps_format_changes_images_and_follows_the_seed(name):
    x = _batch()
    y = make_augmenter(False, (name,), seed=3, device="cpu")(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.device == x.device
    assert y.min() >= 0 and y.max() <= 255
    # Every image changed, not just the batch on average.
    assert ((y - x).abs().flatten(1).mean(1) > 1.0).all()
    again = make_augmenter(False, (name,), seed=3, device="cpu")(x)
    other = make_augmenter(False, (name,), seed=4, device="cpu")(x)
    assert torch.equal(y, again)
    assert not torch.allclose(y, other)


def test_all_transforms_with_flip_stay_in_range():
    x = _batch()
    y = make_augmenter(True, AUGMENTATIONS, seed=0, device="cpu")(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255


def test_zero_magnitude_affine_is_the_identity():
    # Checks affine_grid and grid_sample agree on align_corners: a mismatch resamples.
    x = _batch()
    g = torch.Generator().manual_seed(0)
    y = random_affine(x, g, rotate=0.0, shift=0.0, zoom=0.0, shear=0.0)
    assert (y - x).abs().max() < 1e-3


def test_nothing_enabled_returns_the_input():
    x = _batch()
    assert torch.equal(make_augmenter(False, (), seed=0, device="cpu")(x), x)


@pytest.mark.parametrize(("dx", "dy"), [(3, -2), (-5, 4), (0, 1)])
def test_whole_pixel_shift_moves_a_pixel_right_and_down(dx, dy):
    y = warp(_one_pixel(10, 12), _pure_transform(dx=dx, dy=dy))
    expected = _one_pixel(10 + dy, 12 + dx)  # positive dx -> right, positive dy -> down
    assert (y - expected).abs().max() < 1e-3


def test_positive_angle_turns_clockwise_on_screen():
    # The image centre is at pixel coordinate 13.5; (row 13, col 20) sits 6.5 to its right
    # (and half a pixel up), so a quarter turn clockwise lands it at (row 20, col 14).
    y = warp(_one_pixel(13, 20), _pure_transform(angle=90.0))
    assert (y - _one_pixel(20, 14)).abs().max() < 1e-3


def test_zoom_above_one_enlarges():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 10:18, 10:18] = 255.0  # an 8 x 8 square around the centre
    y = warp(x, _pure_transform(scale=1.5))
    assert (y > 127.5).sum().item() == 12 * 12


def test_erase_blanks_one_rectangle_of_the_stated_size_in_about_p_of_the_images():
    x = _batch(n=2000) + 1.0  # no zero pixel before erasing
    y = random_erase(x, torch.Generator().manual_seed(0), p=0.5)
    erased = y == 0  # (B, 1, 28, 28)
    hit = erased.flatten(1).any(1)
    assert 0.45 < hit.float().mean() < 0.55
    assert torch.equal(y[~erased], x[~erased])  # nothing else changes
    for mask in erased[hit][:200, 0]:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        height = int(rows.max() - rows.min() + 1)
        width = int(cols.max() - cols.min() + 1)
        assert mask.sum() == height * width  # one solid rectangle
        # sides are rounded (and clamped to the image), so allow a pixel either way
        assert (height - 1) * (width - 1) <= ERASE_AREA[1] * 28 * 28
        assert (height + 1) * (width + 1) >= ERASE_AREA[0] * 28 * 28
        assert height / (width + 1) <= ERASE_ASPECT[1] and (height + 1) / width >= ERASE_ASPECT[0]


def test_erase_through_the_augmenter_follows_the_seed():
    x = _batch() + 1.0  # no zero pixel before erasing
    a = make_augmenter(False, ("erase",), seed=3, device="cpu")(x)
    b = make_augmenter(False, ("erase",), seed=3, device="cpu")(x)
    c = make_augmenter(False, ("erase",), seed=4, device="cpu")(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.eq(0).any() and torch.equal(a[a != 0], x[a != 0])


def test_state_dict_round_trip_continues_the_stream():
    x = _batch()
    augmenter = make_augmenter(True, AUGMENTATIONS, seed=5, device="cpu")
    augmenter(x)  # advance the stream past the start
    buffer = io.BytesIO()
    torch.save(augmenter.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    expected = augmenter(x)
    resumed = make_augmenter(True, AUGMENTATIONS, seed=99, device="cpu")
    resumed.load_state_dict(state)
    assert torch.equal(resumed(x), expected)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: rotate, shift, zoom, shear"):
        make_augmenter(False, ("rotate", "blur"), seed=0, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_stay_on_the_device_and_follow_the_seed():
    x = _batch(device="cuda")
    augmenter = make_augmenter(True, AUGMENTATIONS, seed=0, device="cuda")
    assert augmenter.generator.device.type == "cuda"
    y = augmenter(x)
    assert y.device.type == "cuda" and y.dtype == torch.float32 and y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 255 and not torch.equal(y, x)
    state = augmenter.state_dict()
    expected = augmenter(x)
    resumed = make_augmenter(True, AUGMENTATIONS, seed=1, device="cuda")
    resumed.load_state_dict(state)
    assert torch.equal(resumed(x), expected)
    assert torch.equal(make_augmenter(True, AUGMENTATIONS, seed=0, device="cuda")(x), y)
