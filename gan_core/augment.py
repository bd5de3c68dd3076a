"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake images.

All randomness comes from the global torch RNG on x's device, so training stays
deterministic under torch.manual_seed. Images are (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["AUGMENTATIONS", "diff_augment"]


def _per_sample(x: Tensor) -> Tensor:
    """Uniform [0, 1) noise of shape (N, 1, 1, 1) matching x's device and dtype."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def color(x: Tensor) -> Tensor:
    """Random brightness (+-0.5), saturation (x[0, 2]) and contrast (x[0.5, 1.5]) per sample."""
    x = x + (_per_sample(x) - 0.5)
    # Saturation scales each pixel's distance from its channel mean; a 1-channel image
    # equals its own mean, so this is a no-op there (it still draws, keeping RNG in step).
    mean = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
    x = (x - mean) * (_per_sample(x) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (x - mean) * (_per_sample(x) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each sample by up to ratio of the side, filling with zeros."""
    n, c, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # (N, H, 1) source row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx  # (N, 1, W) source column
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (N, H, W)
    # Gather (differentiable w.r.t. x) from clamped indices, then zero what came from outside.
    src = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)  # (N, H, W)
    index = src.view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out * inside.unsqueeze(1).to(x.dtype)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a random square of ratio times the side per sample (it may overhang the edge)."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centres as in the reference implementation: anywhere in the image.
    top = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), device=x.device) - size_h // 2
    left = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), device=x.device) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cut = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~cut).unsqueeze(1).to(x.dtype)  # cut: (N, H, W)


AUGMENTATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def diff_augment(x: Tensor, ops: tuple[str, ...]) -> Tensor:
    """Apply ops (any of 'color', 'translation', 'cutout') in the given order; () is identity."""
    for op in ops:
        try:
            fn = AUGMENTATIONS[op]
        except KeyError:
            raise ValueError(
                f"unknown augment op {op!r}; choose from {list(AUGMENTATIONS)}"
            ) from None
        x = fn(x)
    return x
