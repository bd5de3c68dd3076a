"""The procedural 'shapes' dataset: labelled geometric shapes, drawn with vectorised torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "ring")
_CHUNK = 2048  # images rendered at once, to bound temporary float memory at large sizes


def make_shapes(
    n: int, size: int, seed: int, channels: int = 1, *, indices: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n shapes (labels index SHAPE_NAMES) at random position, scale and brightness/colour.

    Returns uint8 (n, channels, size, size) and int64 (n,); deterministic for a seed.
    Edges are anti-aliased from signed distances, so no supersampling is needed. With
    ``indices``, only those of the n are drawn, in that order (the same pixels as in the whole
    set), and the tensors hold len(indices).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    picked = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=g) % len(SHAPE_NAMES)  # exactly balanced classes
    r = size * (0.18 + 0.14 * torch.rand(n, generator=g))  # shape "radius" in pixels
    margin = 1.2 * r  # keeps every shape, triangle apex included, inside the image
    cx = margin + (size - 2 * margin) * torch.rand(n, generator=g)
    cy = margin + (size - 2 * margin) * torch.rand(n, generator=g)
    bg = (0.12 * torch.rand(n, 1, generator=g)).expand(n, channels)  # dark grey
    if channels == 1:
        fg = 0.55 + 0.45 * torch.rand(n, 1, generator=g)
    else:  # a random colour whose brightest channel is 0.6..1
        rgb = torch.rand(n, 3, generator=g)
        fg = rgb / rgb.amax(1, keepdim=True) * (0.6 + 0.4 * torch.rand(n, 1, generator=g))
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    out = torch.empty(len(picked), channels, size, size, dtype=torch.uint8)
    # Class by class, so each draws only its own shape; chunks bound temporary memory.
    for cls in range(len(SHAPE_NAMES)):
        for rows in (labels[picked] == cls).nonzero().squeeze(1).split(_CHUNK):
            i = picked[rows]
            dx = coords.view(1, 1, -1) - cx[i].view(-1, 1, 1)  # (b, 1, size): broadcasts
            dy = coords.view(1, -1, 1) - cy[i].view(-1, 1, 1)  # (b, size, 1)
            sd = _signed_distance(cls, dx, dy, r[i].view(-1, 1, 1))
            cover = sd.neg_().add_(0.5).clamp_(0, 1).unsqueeze(1)  # pixel fraction inside
            img = (fg[i] - bg[i])[:, :, None, None] * cover + bg[i, :, None, None]
            out[rows] = img.mul_(255).round_().to(torch.uint8)
    return out, labels[picked]


def _signed_distance(cls: int, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Distance in pixels from each pixel to the outline of shape `cls`, negative inside."""
    ax, ay = dx.abs(), dy.abs()
    if cls == 0:  # disc
        return torch.hypot(dx, dy).sub_(r)
    if cls == 1:  # square
        return torch.maximum(ax, ay).sub_(0.8 * r)
    if cls == 2:  # equilateral triangle, apex up (y grows downwards), circumradius 1.15 r
        return torch.maximum(dy, math.sqrt(0.75) * ax - 0.5 * dy).sub_(0.575 * r)
    if cls == 3:  # plus sign: the union of two bars
        t = 0.3 * r
        return torch.minimum(torch.maximum(ax - r, ay - t), torch.maximum(ax - t, ay - r))
    return torch.hypot(dx, dy).sub_(0.775 * r).abs_().sub_(0.225 * r)  # ring, 0.55 r to r
