"""Differentiable augmentations of the images D sees, real and fake alike.

The ops: DiffAugment's (Zhao et al. 2020: color, translation, cutout) and the geometric ones
StyleGAN2-ADA (Karras et al. 2020) found to matter most for small data: x-flips and random
multiples of 90 degrees. Each op is applied to each sample with a probability p: a fixed one
(1.0, the default, is DiffAugment: every op on every sample) or one that adapts to how much D
overfits (``AdaptiveP``, the ADA heuristic).

All randomness comes from the global torch RNG on x's device, so training stays
deterministic under torch.manual_seed (and a resumed run continues exactly: the RNG state is
in the checkpoint); or, given one, from a torch.Generator (a rank of a data-parallel run:
gan_core.distributed.RankRandom). Images are (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["AUGMENTATIONS", "AdaptiveP", "augment", "diff_augment"]


def _per_sample(x: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Uniform [0, 1) noise of shape (N, 1, 1, 1) matching x's device and dtype."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=gen)


def color(x: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Random brightness (+-0.5), saturation (x[0, 2]) and contrast (x[0.5, 1.5]) per sample."""
    x = x + (_per_sample(x, gen) - 0.5)
    # Saturation scales each pixel's distance from its channel mean; a 1-channel image
    # equals its own mean, so this is a no-op there (it still draws, keeping RNG in step).
    mean = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
    x = (x - mean) * (_per_sample(x, gen) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (x - mean) * (_per_sample(x, gen) + 0.5) + mean


def translation(x: Tensor, gen: torch.Generator | None = None, ratio: float = 0.125) -> Tensor:
    """Shift each sample by a whole number of pixels, up to ratio of the side, filling with
    zeros (no resampling: each output pixel is an input pixel or 0)."""
    n, c, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device, generator=gen)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device, generator=gen)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # (N, H, 1) source row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx  # (N, 1, W) source column
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (N, H, W)
    # Gather (differentiable w.r.t. x) from clamped indices, then zero what came from outside.
    src = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)  # (N, H, W)
    index = src.view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return out * inside.unsqueeze(1).to(x.dtype)


def cutout(x: Tensor, gen: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    """Zero a random square of ratio times the side per sample (it may overhang the edge)."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # Centres as in the reference implementation: anywhere in the image.
    top = (
        torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), device=x.device, generator=gen)
        - size_h // 2
    )
    left = (
        torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), device=x.device, generator=gen)
        - size_w // 2
    )
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cut = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~cut).unsqueeze(1).to(x.dtype)  # cut: (N, H, W)


def flip(x: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability 1/2 (x-flip only: an upside-down image
    is rarely one of the data's)."""
    mirrored = _per_sample(x, gen) < 0.5  # (N, 1, 1, 1)
    return torch.where(mirrored, x.flip(3), x)


def rot90(x: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Rotate each sample by a random multiple of 90 degrees (0, 90, 180, 270, equally likely).
    Square images only (every image side here is). Leaks orientation into G at high p."""
    n, _, h, w = x.shape
    if h != w:
        raise ValueError(f"rot90 needs square images, got {h}x{w}")
    k = torch.randint(0, 4, (n,), device=x.device, generator=gen)
    turns = torch.stack([torch.rot90(x, i, dims=(2, 3)) for i in range(4)])  # (4, N, C, H, W)
    return turns[k, torch.arange(n, device=x.device)]


AUGMENTATIONS: dict[str, Callable[..., Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
    "flip": flip,
    "rot90": rot90,
}


def _op(name: str) -> Callable[..., Tensor]:
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown augment op {name!r}; choose from {list(AUGMENTATIONS)}"
        ) from None


def augment(
    x: Tensor,
    ops: tuple[str, ...],
    p: float | Tensor = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Apply ops in the given order, each to each sample with probability p.

    p = 1 (a float) applies every op to every sample and draws nothing more than the ops do,
    exactly as DiffAugment did before p existed; p = 0 (a float) applies and draws nothing.
    Otherwise (also for a tensor p, which may change between calls without a device sync)
    each op runs on the whole batch and a per-sample draw keeps its result or the input.
    Draws come from ``generator``, or the global RNG when it is None.
    """
    if isinstance(p, float | int) and p <= 0:
        return x
    for name in ops:
        out = _op(name)(x, generator)
        if isinstance(p, float | int) and p >= 1:
            x = out
        else:
            # (N, 1, 1, 1)
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < p
            x = torch.where(keep, out, x)
    return x


def diff_augment(x: Tensor, ops: tuple[str, ...]) -> Tensor:
    """DiffAugment: every op on every sample (``augment`` with p = 1); () is identity."""
    return augment(x, ops, 1.0)


class AdaptiveP:
    """StyleGAN2-ADA's augmentation probability: p starts at 0 and, every ``interval`` D
    updates, moves by ``sign(r_t - target) * batch * interval / (kimg * 1000)`` (clamped to
    [0, 1]), where r_t = E[sign(D(real))] over those updates: the share of reals D calls real
    beyond the share it doubts, which rises as D overfits.

    Everything stays on the device (no sync per step); ``state_dict`` holds p and the
    statistics of the interval in progress, so a resumed run moves p exactly as an
    uninterrupted one.
    """

    def __init__(
        self,
        *,
        target: float,
        interval: int,
        kimg: float,
        batch_size: int,
        device: torch.device,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ):
        self.target, self.interval = target, interval
        # data parallel: sums a (2,) tensor over the ranks, so every rank moves p alike and
        # the statistics (hence a checkpoint) are the global batch's
        self.reduce = reduce
        self.speed = batch_size * interval / (kimg * 1000.0)
        self.p = torch.zeros((), device=device)
        self.signs = torch.zeros((), device=device)  # sum of sign(D(real)) this interval
        self.count = torch.zeros((), device=device)  # samples in it
        self.updates = 0  # D updates into the interval

    def observe(self, realness: Tensor) -> None:
        """Account for one D update's verdicts on its (augmented) reals (D(real), or what the
        loss measures from its boundary: GANLoss.realness); move p at an interval's end."""
        logits = realness.detach().float()
        if self.reduce is None:
            self.signs += logits.sign().sum()
            self.count += logits.numel()
        else:
            stats = torch.stack([logits.sign().sum(), logits.new_tensor(float(logits.numel()))])
            signs, count = self.reduce(stats)
            self.signs += signs
            self.count += count
        self.updates += 1
        if self.updates >= self.interval:
            r_t = self.signs / self.count
            self.p = (self.p + torch.sign(r_t - self.target) * self.speed).clamp(0.0, 1.0)
            self.signs.zero_()
            self.count.zero_()
            self.updates = 0

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "p": self.p.clone(),
            "signs": self.signs.clone(),
            "count": self.count.clone(),
            "updates": torch.tensor(self.updates, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.p.device
        self.p = state["p"].to(device=device, dtype=torch.float32).reshape(())
        self.signs = state["signs"].to(device=device, dtype=torch.float32).reshape(())
        self.count = state["count"].to(device=device, dtype=torch.float32).reshape(())
        self.updates = int(state["updates"])
