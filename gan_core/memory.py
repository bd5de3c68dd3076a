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

A translation config (``kind`` paired or unpaired) is counted the same way, from the forwards
its step makes (gan_core.translation.steps), per image:

- paired (pix2pix): G_ab once, the conditional D_b three times (real and fake pair in the D
  step, the fake pair again in the G step);
- unpaired (CycleGAN): G_ab and G_ba twice each (translate, and translate back for the
  cycle), and once more each for the identity loss where it is on; D_b and D_a once each in
  the G step and twice each (real, and pooled fake) in the D step.

Weights: both generators and both discriminators (as many as the kind has) with gradients
and Adam moments, the EMA copies only where ``ema_decay`` is set, and the image pools
(pool_size images per domain). Unresolved channels (None) count as 3, and an unresolved
identity loss as on where the channels are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from gan_core.config import TrainConfig
from gan_core.jobconfig import AnyConfig
from gan_core.nets import build_discriminator, build_generator
from gan_core.translation.config import GeneratorName, TranslationConfig, UnpairedConfig

__all__ = ["MemoryEstimate", "estimate_training_memory"]
_FLOAT = 4  # bytes


@dataclass(frozen=True)
class MemoryEstimate:
    generator_params: int
    discriminator_params: int
    weight_bytes: int  # parameters, gradients, Adam moments, EMA copies, image pools
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


def estimate_training_memory(config: AnyConfig) -> MemoryEstimate:
    """Estimated peak training memory of ``config`` of any kind (noise, paired, unpaired);
    unresolved fields take their largest case."""
    if isinstance(config, TranslationConfig):
        return _translation_estimate(config)
    g_params, d_params, g_act, d_act = _per_image(config)
    weights = (4 * (g_params + d_params) + g_params) * _FLOAT
    per_image = (g_act + 2 * d_act) + (g_act + d_act)  # the D step, then the G step
    activations = int(1.5 * per_image * config.batch_size * config.d_steps * _FLOAT)
    return MemoryEstimate(g_params, d_params, weights, activations, weights + activations)


@dataclass(frozen=True)
class _Net:
    params: int
    activations: int  # per image


@lru_cache(maxsize=256)
def _translation_nets(
    generator: GeneratorName, kind: str, ca: int, cb: int, size: int, g_width: int, d_width: int
) -> dict[str, _Net]:
    """The run's nets (G_ab, D_b; G_ba, D_a when unpaired): parameters, activations per image."""
    from gan_core.translation.nets import build_patch_discriminator, build_translator

    paired = kind == "paired"
    out: dict[str, _Net] = {}
    with torch.device("meta"):
        a, b = torch.zeros(1, ca, size, size), torch.zeros(1, cb, size, size)
        sides = [("G_ab", ca, cb, a, "D_b")] + ([] if paired else [("G_ba", cb, ca, b, "D_a")])
        for g_name, c_in, c_out, x, d_name in sides:
            G = build_translator(generator, c_in, c_out, size, g_width).eval()
            D = build_patch_discriminator(
                c_out, size, d_width, condition_channels=c_in if paired else 0
            ).eval()
            g_act, fake = _activations_per_image(G, x)
            d_act, _ = _activations_per_image(D, fake, *([x] if paired else []))
            out[g_name] = _Net(sum(p.numel() for p in G.parameters()), g_act)
            out[d_name] = _Net(sum(p.numel() for p in D.parameters()), d_act)
    return out


def _translation_estimate(config: TranslationConfig) -> MemoryEstimate:
    ca, cb, size = config.channels_a or 3, config.channels_b or 3, config.image_size
    nets = _translation_nets(
        config.generator, config.kind, ca, cb, size, config.g_width, config.d_width
    )
    gens = [n for name, n in nets.items() if name.startswith("G_")]
    discs = [n for name, n in nets.items() if name.startswith("D_")]
    g_params, d_params = sum(n.params for n in gens), sum(n.params for n in discs)
    ema_params = g_params if config.ema_decay is not None else 0
    pools = 0
    if isinstance(config, UnpairedConfig):
        pools = config.pool_size * (ca + cb) * size * size
    weights = (4 * (g_params + d_params) + ema_params + pools) * _FLOAT
    g_act, d_act = sum(n.activations for n in gens), sum(n.activations for n in discs)
    if isinstance(config, UnpairedConfig):
        identity = config.lambda_identity
        if identity is None:  # resolved at the start: on where the channels are equal
            identity = 1.0 if ca == cb else 0.0
        # G step: translate, translate back, identity; each D once; D step: each D twice
        per_image = (2 + (identity > 0)) * g_act + d_act + 2 * d_act
    else:
        per_image = g_act + 3 * d_act  # G(a); D(b, a) and D(G(a), a), then D(G(a), a) again
    activations = int(1.5 * per_image * config.batch_size * _FLOAT)
    return MemoryEstimate(g_params, d_params, weights, activations, weights + activations)
