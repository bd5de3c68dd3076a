"""How much memory a training config needs, estimated before anything is allocated.

The networks are built on PyTorch's ``meta`` device (shapes only, no storage) and run once on
a meta batch of one, with hooks that add up every module's output: that is what a training
step keeps for backward, per image. Then, in float32:

- weights: G and D parameters, each with a gradient and two Adam moments, plus the EMA copy
  of G (and D's again under WGAN-GP's double backward, ignored: it is small next to
  activations);
- activations: per image, G's forward plus D's forward twice (real and fake) in the D step,
  and G's and D's once more in the G step (autograd keeps about one tensor per layer for
  backward), plus half as much again for the gradients in flight during backward.

It is an estimate (allocator slack, cuDNN workspaces and the data are not in it), good to
refuse a config that cannot fit by orders of magnitude -- 256 px, width 1024, batch 4096 is
about 10 TB -- long before a worker dies trying.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from gan_core.config import TrainConfig
from gan_core.nets import build_discriminator, build_generator

__all__ = ["MemoryEstimate", "estimate_training_memory"]
_FLOAT = 4  # bytes


@dataclass(frozen=True)
class MemoryEstimate:
    generator_params: int
    discriminator_params: int
    weight_bytes: int  # parameters, gradients, Adam moments, EMA copy
    activation_bytes: int  # for the whole batch
    total_bytes: int

    def describe(self) -> str:
        gib = 1 << 30
        return (
            f"about {self.total_bytes / gib:.1f} GiB ({self.weight_bytes / gib:.2f} GiB weights "
            f"and optimizer state, {self.activation_bytes / gib:.1f} GiB activations)"
        )


def _activations_per_image(
    net: nn.Module, *inputs: torch.Tensor | None
) -> tuple[int, torch.Tensor]:
    total = 0

    def count(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        out = net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total, out


@lru_cache(maxsize=256)
def _per_image(config: TrainConfig) -> tuple[int, int, int, int]:
    """(G params, D params, G activations per image, D activations per image)."""
    resolved = config.model_copy(
        update={
            "channels": config.channels or 3,
            "num_classes": (config.num_classes or 1000) if config.conditional else None,
        }
    )
    with torch.device("meta"):
        G, D = build_generator(resolved), build_discriminator(resolved)
        G.eval()  # BatchNorm on a batch of one would refuse; the shapes are the same
        D.eval()
        z = torch.zeros(1, resolved.latent_dim)
        y = torch.zeros(1, dtype=torch.long) if resolved.conditional else None
        g_act, fake = _activations_per_image(G, z, y)
        d_act, _ = _activations_per_image(D, fake, y)
    params = [sum(p.numel() for p in net.parameters()) for net in (G, D)]
    return params[0], params[1], g_act, d_act


def estimate_training_memory(config: TrainConfig) -> MemoryEstimate:
    """Estimated peak training memory of ``config`` (unresolved fields take their largest case)."""
    g_params, d_params, g_act, d_act = _per_image(config)
    weights = (4 * (g_params + d_params) + g_params) * _FLOAT
    per_image = (g_act + 2 * d_act) + (g_act + d_act)  # the D step, then the G step
    activations = int(1.5 * per_image * config.batch_size * config.d_steps * _FLOAT)
    return MemoryEstimate(g_params, d_params, weights, activations, weights + activations)
