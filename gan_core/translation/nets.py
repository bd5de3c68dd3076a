"""Image-to-image networks from the papers: pix2pix's U-Net generator and PatchGAN
discriminator (Isola et al. 2017) and CycleGAN's ResNet-block generator (Zhu et al. 2017).

Norm: instance norm in every net (``InstanceNorm2d``, per-sample statistics in training and at
inference, no running statistics). CycleGAN uses it; pix2pix's paper used batch norm with batch
size 1 and batch statistics at test time, which is instance norm, so we call it that. Not affine
by default (the reference code's instance norm); a conv or transposed conv followed by a norm
then has no bias, as the norm subtracts any per-channel constant. ``norm="none"`` removes the
norms (the receptive-field test uses it: instance norm couples every pixel of a sample).

Dropout (0.5) is in the U-Net's first three decoder blocks, as in pix2pix, and only in training
mode: in eval mode a translation is a pure function of its input, whatever the batch around it.
Weights are initialised N(0, 0.02), affine norm scales N(1, 0.02), biases 0, as in both papers.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "MAX_SIDE",
    "MIN_SIDE",
    "PatchDiscriminator",
    "ResnetGenerator",
    "UNetGenerator",
    "build_patch_discriminator",
    "build_translator",
    "init_translation_weights",
    "resnet_blocks",
    "unet_depth",
]

Norm = Literal["instance", "none"]
TranslatorKind = Literal["unet", "resnet"]

LEAK = 0.2  # LeakyReLU slope in the U-Net encoder and in PatchGAN, as in pix2pix
MIN_SIDE, MAX_SIDE = 32, 256  # the image sides the papers' nets are used at here
MIN_UNET_DEPTH = 4  # the side must halve evenly this often: 32..256 px reach 1x1 .. 3x3 or less
UNET_DROPOUT_BLOCKS = 3  # pix2pix: CD512-CD1024-CD1024, then no dropout


def _check_side(image_size: int, net: str) -> None:
    if not MIN_SIDE <= image_size <= MAX_SIDE:
        raise ValueError(
            f"the {net} cannot take {image_size}px images: the side must be {MIN_SIDE}..{MAX_SIDE}"
        )


def unet_depth(image_size: int) -> int:
    """Downsamplings of the U-Net for a side: as many as halve it evenly (256 px: 8, to 1x1)."""
    _check_side(image_size, "U-Net")
    depth = (image_size & -image_size).bit_length() - 1  # trailing zero bits: exact halvings
    if depth < MIN_UNET_DEPTH:
        raise ValueError(
            f"the U-Net cannot take {image_size}px images: the side must halve evenly "
            f"{MIN_UNET_DEPTH} times (a multiple of {2**MIN_UNET_DEPTH})"
        )
    return depth


def resnet_blocks(image_size: int) -> int:
    """CycleGAN's number of residual blocks: 6 up to 128 px, 9 above."""
    return 6 if image_size <= 128 else 9


def _norm(norm: Norm, channels: int, affine: bool) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=affine, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}: use 'instance' or 'none'")


def init_translation_weights(module: nn.Module) -> nn.Module:
    """N(0, 0.02) conv weights, N(1, 0.02) affine norm scales, zero biases, in place."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def _check_input(x: Tensor, channels: int, multiple: int, net: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"the {net} takes (N, {channels}, H, W) images, got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"the {net} takes sides that are multiples of {multiple}, got {h}x{w}")


# --- pix2pix U-Net ------------------------------------------------------------------------


class UNetGenerator(nn.Module):
    """pix2pix's U-Net: images (N, in_channels, S, S) -> (N, out_channels, S, S) in [-1, 1].

    Encoder C64-C128-C256-C512-C512-... (4x4 conv, stride 2, norm except on the first and the
    innermost layer, LeakyReLU 0.2), one block per exact halving of the side; decoder of 4x4
    transposed convs (stride 2, norm, dropout on the first three, ReLU) each followed by the
    skip from the encoder at that side; a last transposed conv to out_channels and tanh.
    The innermost layer has no norm: at 1x1 instance norm would zero it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        width: int = 64,
        *,
        norm: Norm = "instance",
        affine: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        depth = unet_depth(image_size)
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.depth = depth
        widths = [width * min(2**i, 8) for i in range(depth)]  # encoder block i's output
        self.down = nn.ModuleList()
        for i in range(depth):  # (N, ., s, s) -> (N, widths[i], s/2, s/2)
            normed = 0 < i < depth - 1
            c_in = in_channels if i == 0 else widths[i - 1]
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(c_in, widths[i], 4, 2, 1, bias=not normed or norm == "none"),
                    _norm(norm, widths[i], affine) if normed else nn.Identity(),
                    nn.LeakyReLU(LEAK),
                )
            )
        self.up = nn.ModuleList()
        for j in range(depth - 1):  # -> (N, widths[k], s*2, s*2), then cat the skip: 2*widths[k]
            k = depth - 2 - j
            c_in = widths[depth - 1] if j == 0 else 2 * widths[k + 1]
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c_in, widths[k], 4, 2, 1, bias=norm == "none"),
                    _norm(norm, widths[k], affine),
                    nn.Dropout(dropout) if j < UNET_DROPOUT_BLOCKS else nn.Identity(),
                    nn.ReLU(),
                )
            )
        self.out = nn.Sequential(
            nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1), nn.Tanh()
        )  # (N, 2*width, S/2, S/2) -> (N, out_channels, S, S)
        init_translation_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_channels, 2**self.depth, "U-Net")
        skips = []
        h = x
        for down in self.down:
            h = down(h)
            skips.append(h)
        for j, up in enumerate(self.up):  # skips[-1] is the bottleneck itself
            h = torch.cat([up(h), skips[-2 - j]], dim=1)
        return self.out(h)


# --- CycleGAN ResNet-block generator -----------------------------------------------------


class _ResidualBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, norm, ReLU, [dropout], reflect-pad, 3x3 conv, norm)(x)."""

    def __init__(self, channels: int, norm: Norm, affine: bool, dropout: float) -> None:
        super().__init__()
        bias = norm == "none"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm(norm, channels, affine),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm(norm, channels, affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator: images (N, in_channels, S, S) -> (N, out_channels, S, S) in [-1, 1].

    c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-out, tanh (widths scale with width).
    The 7x7 and residual convs use reflection padding, as the paper; the stride-2 convs and the
    transposed convs (3x3, stride 1/2) use zero padding, as a transposed conv cannot reflect.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        width: int = 64,
        *,
        n_blocks: int | None = None,
        norm: Norm = "instance",
        affine: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_side(image_size, "ResNet generator")
        if image_size % 4:
            raise ValueError(
                f"the ResNet generator cannot take {image_size}px images: "
                "the side must be a multiple of 4 (two stride-2 downsamplings)"
            )
        n_blocks = resnet_blocks(image_size) if n_blocks is None else n_blocks
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be at least 1, got {n_blocks}")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.n_blocks = n_blocks
        bias = norm == "none"
        w = width
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, w, 7, bias=bias),
            _norm(norm, w, affine),
            nn.ReLU(),
        ]  # (N, w, S, S)
        for c in (w, 2 * w):  # d2w, d4w: (N, c, s, s) -> (N, 2c, s/2, s/2)
            layers += [
                nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias),
                _norm(norm, 2 * c, affine),
                nn.ReLU(),
            ]
        layers += [_ResidualBlock(4 * w, norm, affine, dropout) for _ in range(n_blocks)]
        for c in (4 * w, 2 * w):  # u2w, uw: (N, c, s, s) -> (N, c/2, 2s, 2s)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=bias),
                _norm(norm, c // 2, affine),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_translation_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_channels, 4, "ResNet generator")
        return self.net(x)


# --- PatchGAN -----------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """PatchGAN: images (N, channels, H, W) [+ condition] -> raw logits (N, 1, H', W').

    C64-C128-C256-C512 (4x4 convs, LeakyReLU 0.2, norm except on the first; stride 2 but the
    last stride 1), then a 4x4 conv to one channel: each logit sees a 70x70 patch for
    n_layers=3. Conditional (pix2pix) when condition_channels > 0: D(B | A) reads A and B
    concatenated on channels; CycleGAN's D reads B alone.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        width: int = 64,
        *,
        n_layers: int = 3,
        condition_channels: int = 0,
        norm: Norm = "instance",
        affine: bool = False,
    ) -> None:
        super().__init__()
        _check_side(image_size, "PatchGAN discriminator")
        if n_layers < 1 or image_size // 2**n_layers - 2 < 1:
            raise ValueError(
                f"the PatchGAN discriminator with n_layers={n_layers} cannot take "
                f"{image_size}px images: no logit would be left"
            )
        self.channels, self.condition_channels = channels, condition_channels
        self.image_size, self.n_layers = image_size, n_layers
        bias = norm == "none"
        widths = [width * min(2**i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [
            nn.Conv2d(condition_channels + channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(LEAK),
        ]
        for i in range(1, n_layers + 1):  # stride 2, the last one stride 1
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], 4, stride, 1, bias=bias),
                _norm(norm, widths[i], affine),
                nn.LeakyReLU(LEAK),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_translation_weights(self)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.condition_channels:
            if condition is None:
                raise ValueError("this PatchGAN is conditional: pass the input image A")
            _check_input(condition, self.condition_channels, 1, "PatchGAN condition")
            if condition.shape[0] != x.shape[0] or condition.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"condition {tuple(condition.shape)} and image {tuple(x.shape)} differ"
                )
            _check_input(x, self.channels, 1, "PatchGAN discriminator")
            x = torch.cat([condition, x], dim=1)
        elif condition is not None:
            raise ValueError("this PatchGAN is unconditional: pass no condition")
        else:
            _check_input(x, self.channels, 1, "PatchGAN discriminator")
        return self.net(x)


# --- builders -----------------------------------------------------------------------------


def build_translator(
    kind: TranslatorKind,
    in_channels: int,
    out_channels: int,
    image_size: int,
    width: int = 64,
    *,
    n_blocks: int | None = None,
    norm: Norm = "instance",
    affine: bool = False,
    dropout: float | None = None,
) -> UNetGenerator | ResnetGenerator:
    """A translation generator by kind: 'unet' (pix2pix) or 'resnet' (CycleGAN).

    dropout defaults to each paper's: 0.5 in the U-Net decoder, none in the ResNet blocks.
    """
    if kind == "unet":
        if n_blocks is not None:
            raise ValueError("n_blocks is for the 'resnet' translator, not 'unet'")
        return UNetGenerator(
            in_channels,
            out_channels,
            image_size,
            width,
            norm=norm,
            affine=affine,
            dropout=0.5 if dropout is None else dropout,
        )
    if kind == "resnet":
        return ResnetGenerator(
            in_channels,
            out_channels,
            image_size,
            width,
            n_blocks=n_blocks,
            norm=norm,
            affine=affine,
            dropout=0.0 if dropout is None else dropout,
        )
    raise ValueError(f"unknown translator kind {kind!r}: use 'unet' or 'resnet'")


def build_patch_discriminator(
    channels: int,
    image_size: int,
    width: int = 64,
    *,
    condition_channels: int = 0,
    n_layers: int = 3,
    norm: Norm = "instance",
    affine: bool = False,
) -> PatchDiscriminator:
    """PatchGAN D: condition_channels=in_channels of A for pix2pix's D(B | A), 0 for CycleGAN."""
    return PatchDiscriminator(
        channels,
        image_size,
        width,
        n_layers=n_layers,
        condition_channels=condition_channels,
        norm=norm,
        affine=affine,
    )
