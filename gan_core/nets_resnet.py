"""R3GAN-style residual nets (``arch: "resnet"``), written from the paper: Huang et al., "The
GAN is dead; long live the GAN! A Modern GAN Baseline", NeurIPS 2024.

A plain ConvNet with residual blocks and no normalisation layer at all (no BatchNorm, no
spectral norm), made trainable by its initialisation rather than by normalisation:

- a residual block is ``x + f(x)``, f = 1x1 conv (width C -> C * expansion), LeakyReLU(0.2),
  grouped 3x3 conv (groups of ``group_size`` channels), LeakyReLU(0.2), 1x1 conv (back to C);
- fix-up init: f's last conv is zero, so every block is the identity at step 0; f's other
  two convs take He init scaled by L^(-1/4), L the net's block count (the paper's
  L^(-1/(2m-2)) for m = 3 convs per branch), so the residual stream's variance grows slowly
  with depth once f moves away from zero;
- resolution changes by a fixed [1,2,1] low-pass filter (bilinear resampling) and a 1x1
  "transition" conv that changes the width; everything between blocks is linear.

G: z -> a learned basis of side b (4, or 4..7 for sides such as 28 = 7 x 4, as for the DCGAN)
modulated by z -- a linear map of z to one scale per channel, times a learned constant
(width, b, b), as the paper's G starts -- then ``blocks`` blocks at side b, and per doubling a
transition conv, x2 upsampling and ``blocks`` blocks; a 1x1 conv to the image's channels and
tanh (the engine's images are in [-1, 1], as the DCGAN G ends). D is the mirror: a 1x1 conv
from the channels, per halving ``blocks`` blocks, x2 downsampling and a transition conv,
``blocks`` blocks at side b, then a depthwise b x b conv to one feature vector that
``nets.Discriminator`` turns into a logit (plus its projection term when conditional).

Widths follow the DCGAN's schedule: g_width / d_width at the image side, doubling per halving
of the side, capped at 8x. The class-conditional forms are ``nets.Generator`` (a label
embedding multiplied into z) and ``nets.Discriminator`` (projection) around these bodies.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_core.config import TrainConfig, dcgan_base

__all__ = [
    "Downsample",
    "ResidualBlock",
    "Upsample",
    "resnet_discriminator_features",
    "resnet_generator_body",
    "stage_widths",
]

LEAK = 0.2  # the LeakyReLU slope of the blocks (the paper's, and the DCGAN D's)
WIDTH_CAP = 8  # a stage is at most 8x the base width, as in the DCGAN (nets._dcgan_generator)


def _he(
    conv: nn.Conv2d, gain_for: Literal["linear", "leaky_relu"] = "linear", scale: float = 1.0
) -> nn.Conv2d:
    """He (fan-in) normal init for the nonlinearity that follows, times scale; zero bias."""
    nn.init.kaiming_normal_(conv.weight, a=LEAK, nonlinearity=gain_for)
    conv.weight.data.mul_(scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock(nn.Module):
    """x + f(x) on (N, width, s, s); f is 1x1 expand, grouped 3x3, 1x1 project."""

    def __init__(self, width: int, expansion: int, group_size: int, total_blocks: int) -> None:
        super().__init__()
        inner = width * expansion
        if inner % group_size:
            raise ValueError(f"width {width} x {expansion} is not a multiple of {group_size}")
        scale = total_blocks**-0.25  # fix-up: L^(-1/(2m-2)) with m = 3 convs in f
        self.expand = _he(nn.Conv2d(width, inner, 1), "leaky_relu", scale)
        self.conv = _he(
            nn.Conv2d(inner, inner, 3, padding=1, groups=inner // group_size), "leaky_relu", scale
        )
        self.project = _he(nn.Conv2d(inner, width, 1))
        nn.init.zeros_(self.project.weight)  # f(x) == 0 at init: the block is the identity
        self.act = nn.LeakyReLU(LEAK)

    def residual(self, x: Tensor) -> Tensor:
        """f(x): (N, width, s, s) -> (N, width, s, s)."""
        return self.project(self.act(self.conv(self.act(self.expand(x)))))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


def _separable(taps: list[float], channels: int) -> Tensor:
    """A depthwise conv kernel (channels, 1, k, k): the outer product of taps, summing to 1."""
    t = torch.tensor(taps)
    k = torch.outer(t, t)
    return (k / k.sum()).expand(channels, 1, *k.shape).contiguous()


class Upsample(nn.Module):
    """(N, C, s, s) -> (N, C, 2s, 2s): nearest x2, then the [1,2,1] low-pass filter. Together
    they are bilinear interpolation with half-pixel centres; the border is replicated."""

    kernel: Tensor  # (C, 1, 3, 3)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # a constant, not a weight: rebuilt with the module, so not in checkpoints
        self.register_buffer("kernel", _separable([1.0, 2.0, 1.0], channels), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.kernel.to(x.dtype), groups=self.channels)


class Downsample(nn.Module):
    """(N, C, 2s, 2s) -> (N, C, s, s): the [1,2,1] low-pass filter, then the mean of each 2x2
    (the adjoint of Upsample), done at once as one [1,3,3,1] filter with stride 2."""

    kernel: Tensor  # (C, 1, 4, 4)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("kernel", _separable([1.0, 3.0, 3.0, 1.0], channels), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


def _layout(image_size: int) -> tuple[int, int]:
    """(base side b, doublings k) with image_size == b * 2**k (config checks it fits)."""
    b = dcgan_base(image_size)
    if b is None:
        raise ValueError(f"image_size: resnet cannot produce {image_size}px images")
    return b, (image_size // b).bit_length() - 1


def stage_widths(base: int, doublings: int) -> list[int]:
    """Widths from the base side up to the image side: base at the image, x2 per halving."""
    return [min(base * 2 ** (doublings - i), base * WIDTH_CAP) for i in range(doublings + 1)]


def _blocks(cfg: TrainConfig, width: int, total: int) -> list[nn.Module]:
    return [
        ResidualBlock(width, cfg.resnet_expansion, cfg.resnet_group_size, total)
        for _ in range(cfg.resnet_blocks)
    ]


def _transition(c_in: int, c_out: int) -> nn.Conv2d:
    return _he(nn.Conv2d(c_in, c_out, 1))


class _GeneratorBody(nn.Module):
    """(N, latent_dim) -> (N, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: TrainConfig, channels: int) -> None:
        super().__init__()
        b, k = _layout(cfg.image_size)
        widths = stage_widths(cfg.g_width, k)  # widths[i] at side b * 2**i
        total = (k + 1) * cfg.resnet_blocks
        # z -> one scale per basis channel; N(0, 1/latent_dim) keeps the scales at unit variance
        self.modulation = nn.Linear(cfg.latent_dim, widths[0])
        nn.init.normal_(self.modulation.weight, 0.0, cfg.latent_dim**-0.5)
        nn.init.zeros_(self.modulation.bias)
        self.basis = nn.Parameter(torch.randn(widths[0], b, b))
        layers: list[nn.Module] = _blocks(cfg, widths[0], total)
        for i in range(k):  # (N, widths[i], s, s) -> (N, widths[i+1], 2s, 2s)
            layers += [_transition(widths[i], widths[i + 1]), Upsample(widths[i + 1])]
            layers += _blocks(cfg, widths[i + 1], total)
        self.stages = nn.Sequential(*layers)
        self.to_image = nn.Sequential(_he(nn.Conv2d(widths[k], channels, 1)), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        x = self.basis * self.modulation(z)[:, :, None, None]  # (N, widths[0], b, b)
        return self.to_image(self.stages(x))  # (N, C, H, W)


def resnet_generator_body(cfg: TrainConfig, channels: int) -> nn.Module:
    """G's body for a resolved resnet cfg: (N, latent_dim) -> (N, channels, H, W)."""
    return _GeneratorBody(cfg, channels)


def resnet_discriminator_features(cfg: TrainConfig, channels: int) -> tuple[nn.Module, int]:
    """D's features for a resnet cfg: (N, channels, H, W) -> (N, F), and F."""
    b, k = _layout(cfg.image_size)
    widths = stage_widths(cfg.d_width, k)[::-1]  # widths[j] at side image_size / 2**j
    total = (k + 1) * cfg.resnet_blocks
    layers: list[nn.Module] = [_transition(channels, widths[0])]
    for j in range(k):  # (N, widths[j], s, s) -> (N, widths[j+1], s/2, s/2)
        layers += _blocks(cfg, widths[j], total)
        layers += [Downsample(widths[j]), _transition(widths[j], widths[j + 1])]
    layers += _blocks(cfg, widths[k], total)
    # the mirror of G's basis: one b x b filter per channel, down to a vector
    layers += [_he(nn.Conv2d(widths[k], widths[k], b, groups=widths[k])), nn.Flatten()]
    return nn.Sequential(*layers), widths[k]
