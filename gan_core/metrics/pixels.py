"""Pixel metrics of image pairs (uint8, (N, C, H, W)): what a paired translator's outputs are
compared with their targets by (gan_core.metrics.translation)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["PSNR_CAP", "as_channels", "l1", "psnr", "ssim"]

PSNR_CAP = 100.0  # dB: an image equal to its target would be +inf, which JSON cannot carry
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
_LUMA = (0.299, 0.587, 0.114)  # as shapes-edges makes its edge maps


def _pair_as_float(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two (N, C, H, W) batches of one shape, got {x.shape}, {y.shape}")
    return x.double(), y.double()


def psnr(x: Tensor, y: Tensor, *, data_range: float = 255.0) -> Tensor:
    """(N,) PSNR in dB of each image pair: 10 log10(data_range² / MSE), capped at PSNR_CAP."""
    x, y = _pair_as_float(x, y)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    floor = data_range**2 * 10 ** (-PSNR_CAP / 10)  # the MSE at which PSNR reaches the cap
    return 10 * torch.log10(data_range**2 / mse.clamp(min=floor))


def _gaussian(size: int, sigma: float, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 255.0,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> Tensor:
    """(N,) mean SSIM (Wang et al. 2004) of each image pair, in float64.

    Local means, variances and covariance under a normalised ``window``x``window`` Gaussian
    (separable; only positions where it fits inside the image, as the paper's code), each
    channel on its own; the SSIM map is averaged over channels and positions. Pixels are on
    [0, data_range] (uint8 images: 255).
    """
    x, y = _pair_as_float(x, y)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM's {window}x{window} window needs sides >= {window}, got {x.shape}")
    c = x.shape[1]
    g = _gaussian(window, sigma, x.device)
    rows, cols = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return s.mean(dim=(1, 2, 3))


def l1(x: Tensor, y: Tensor) -> Tensor:
    """(N,) mean |x - y| of uint8 images with pixels scaled to [-1, 1]."""
    x, y = _pair_as_float(x, y)
    return (x - y).abs().mean(dim=(1, 2, 3)) / 127.5


def as_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 images with ``channels`` channels: grey repeated, or colour turned grey (luma)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.repeat(1, channels, 1, 1)
    luma = torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    return (images.double() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
