"""DiffAugment: shapes, determinism, differentiability, and that each op does something."""

from __future__ import annotations

import pytest
import torch

from gan_core.augment import diff_augment

ALL = ("color", "translation", "cutout")


def images(n: int = 4, c: int = 3, side: int = 16) -> torch.Tensor:
    return torch.rand(n, c, side, side) * 2 - 1  # [-1, 1]


@pytest.mark.parametrize("ops", [("color",), ("translation",), ("cutout",), ALL])
@pytest.mark.parametrize("channels", [1, 3])
def test_keeps_shape_and_dtype(ops, channels):
    torch.manual_seed(0)
    x = images(c=channels, side=12)
    out = diff_augment(x, ops)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_empty_ops_is_identity():
    x = images()
    assert diff_augment(x, ()) is x


def test_deterministic_under_manual_seed():
    x = images()
    torch.manual_seed(7)
    a = diff_augment(x, ALL)
    torch.manual_seed(7)
    b = diff_augment(x, ALL)
    torch.manual_seed(8)
    c = diff_augment(x, ALL)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("ops", [("color",), ("translation",), ("cutout",), ALL])
def test_differentiable(ops):
    torch.manual_seed(0)
    x = images().requires_grad_(True)
    diff_augment(x, ops).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_shifts_with_zero_fill():
    torch.manual_seed(0)
    x = images(n=32, c=1, side=16)
    out = diff_augment(x, ("translation",))
    changed = [not torch.equal(out[i], x[i]) for i in range(32)]
    assert sum(changed) > 16  # shift (0, 0) has probability 1/25 per sample
    for i in range(32):
        # A shifted image is the original moved by some (dy, dx) in [-2, 2], zeros elsewhere.
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
                shifted[:, max(0, dy) : 16 - max(0, -dy), max(0, dx) : 16 - max(0, -dx)] = src
                found = found or torch.equal(out[i], shifted)
        assert found, i


def test_cutout_zeroes_a_half_side_square():
    torch.manual_seed(0)
    x = images(n=16, c=3, side=16) * 0.5 + 0.75  # strictly positive so zeros are the cut
    out = diff_augment(x, ("cutout",))
    for i in range(16):
        zero = out[i] == 0  # (C, H, W)
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # all channels
        rows, cols = zero[0].any(1).nonzero(), zero[0].any(0).nonzero()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        # The cut region is one rectangle: every pixel in its bounding box is zero.
        assert zero[0][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert torch.equal(out[i][~zero], x[i][~zero])
    assert sum(int((out[i] == 0).sum()) for i in range(16)) > 16 * 3 * 16  # mostly full squares


def test_color_changes_values_per_sample():
    torch.manual_seed(0)
    x = images(n=4, c=3)
    out = diff_augment(x, ("color",))
    assert all((out[i] - x[i]).abs().max() > 1e-3 for i in range(4))
    # Brightness shifts samples by different amounts.
    shifts = (out - x).mean(dim=(1, 2, 3))
    assert shifts.std() > 1e-3


def test_saturation_is_a_no_op_for_gray_images():
    """On 1 channel, color is brightness then contrast only: an affine map of each image."""
    torch.manual_seed(0)
    x = images(n=4, c=1)
    out = diff_augment(x, ("color",))
    for i in range(4):
        a, b = x[i].flatten(), out[i].flatten()
        slope = ((a - a.mean()) * (b - b.mean())).sum() / ((a - a.mean()) ** 2).sum()
        assert (b - (b.mean() + slope * (a - a.mean()))).abs().max() < 1e-5
        assert 0.5 - 1e-5 <= slope <= 1.5 + 1e-5


def test_unknown_op_raises():
    with pytest.raises(ValueError, match="translation"):
        diff_augment(images(), ("spin",))
