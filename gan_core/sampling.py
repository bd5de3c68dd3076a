"""Seeded sampling, latent interpolation and deterministic PNG grids."""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from gan_core.nets import Generator


def latents(n: int, latent_dim: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """(n, latent_dim) standard-normal latents from a seeded CPU generator.

    Drawing on the CPU makes the same seed give the same latents on any device.
    With ``truncation`` (the truncation trick), values beyond +-truncation are
    redrawn, trading variety for fidelity.
    """
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_dim, generator=gen)
    if truncation is not None:
        if truncation <= 0:
            raise ValueError("truncation must be > 0")
        for _ in range(1000):  # each pass redraws ~P(|z|>t) of the values; converges fast
            outside = z.abs() > truncation
            if not outside.any():
                break
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
        z.clamp_(-truncation, truncation)
    return z


def default_labels(
    generator: Generator, n: int, labels: torch.Tensor | None
) -> torch.Tensor | None:
    """Labels for a conditional generator: as given, or cycling 0..K-1; None when unconditional."""
    num_classes = getattr(generator, "num_classes", None)
    if num_classes is None:
        return None
    if labels is None:
        return torch.arange(n) % num_classes
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be n={n} class ids in 0..{num_classes - 1}")
    return labels


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def generate(generator: Generator, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Run G on given latents; returns float32 CPU images in [-1, 1], (N, C, H, W)."""
    device = _device_of(generator)
    y = None if labels is None else labels.to(device)
    return generator(z.to(device), y).float().clamp(-1, 1).cpu()


def sample_inputs(
    generator: Generator,
    n: int,
    seed: int,
    labels: torch.Tensor | int | None = None,
    truncation: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (latents, labels) that ``sample`` feeds G; they can be generated in pieces."""
    z = latents(n, generator.latent_dim, seed, truncation)
    given = None if labels is None else torch.as_tensor(labels)
    return z, default_labels(generator, n, given)


def sample(
    generator: Generator,
    n: int,
    seed: int,
    labels: torch.Tensor | int | None = None,
    truncation: float | None = None,
) -> torch.Tensor:
    """n images from G for a seed; the same arguments give the same images."""
    return generate(generator, *sample_inputs(generator, n, seed, labels, truncation))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent rows a and b at fractions t (T,) -> (T, D)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_inputs(
    generator: Generator, from_seed: int, to_seed: int, steps: int, label: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (latents, labels) of a latent walk: ``steps`` points from one seed's latent to another's."""
    if steps < 2:
        raise ValueError("steps must be >= 2")
    a = latents(1, generator.latent_dim, from_seed)[0]
    b = latents(1, generator.latent_dim, to_seed)[0]
    z = slerp(a, b, torch.linspace(0, 1, steps))
    # One class along the whole walk (class 0 unless asked) so only the latent moves.
    return z, default_labels(generator, steps, torch.tensor(label or 0))


def interpolate(
    generator: Generator,
    from_seed: int,
    to_seed: int,
    steps: int,
    label: int | None = None,
) -> torch.Tensor:
    """A latent walk of ``steps`` images from one seed's latent to another's."""
    return generate(generator, *interpolation_inputs(generator, from_seed, to_seed, steps, label))


def to_uint8_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one uint8 (H', W', C) grid image."""
    grid = make_grid((images.float() + 1) / 2, nrow=nrow, padding=padding, pad_value=0.0)
    return grid.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def png_grid(images: torch.Tensor, nrow: int = 8) -> bytes:
    """Encode images as a PNG grid; identical input gives byte-identical output."""
    grid = to_uint8_grid(images, nrow=nrow).numpy()
    channels = grid.shape[2]
    # make_grid turns 1-channel images into 3 identical channels; store them as grayscale.
    gray = images.shape[1] == 1 or channels == 1
    img = Image.fromarray(grid[:, :, 0], "L") if gray else Image.fromarray(grid, "RGB")
    buf = io.BytesIO()
    # No timestamps or text chunks, fixed compression: the bytes depend on pixels alone.
    img.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()
