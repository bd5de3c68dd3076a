"""Seeded sampling, labels, truncation, latent walks and deterministic PNG grids."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.config import TrainConfig
from gan_core.nets import build_generator
from gan_core.sampling import interpolate, latents, png_grid, sample, to_uint8_grid

LATENT = 16


def make_g(conditional: bool = False, channels: int = 1, size: int = 16):
    torch.manual_seed(0)
    c = TrainConfig(
        image_size=size,
        channels=channels,
        g_width=8,
        d_width=8,
        latent_dim=LATENT,
        conditional=conditional,
        num_classes=5 if conditional else None,
    )
    G = build_generator(c)
    # DCGAN init (std 0.02) makes an untrained G output ~1e-4 everywhere, which would let
    # almost any two images compare "close"; He init spreads outputs over most of [-1, 1].
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, torch.nn.Linear | torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                torch.nn.init.kaiming_normal_(m.weight)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G():
    return make_g()


@pytest.fixture(scope="module")
def Gc():
    return make_g(conditional=True)


# --------------------------------------------------------------------------- latents / sample


def test_latents_are_seeded_and_independent_of_global_rng():
    torch.manual_seed(1)
    a = latents(8, LATENT, seed=5)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = latents(8, LATENT, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is untouched
    assert torch.equal(a, b) and a.shape == (8, LATENT) and a.device.type == "cpu"
    assert not torch.equal(a, latents(8, LATENT, seed=6))
    # the first rows do not depend on n
    assert torch.equal(latents(3, LATENT, seed=5), a[:3])
    assert 0.5 < a.std() < 1.5


def test_sample_same_seed_identical_different_seed_differs(G):
    torch.manual_seed(123)
    a = sample(G, 6, seed=7)
    torch.manual_seed(456)  # the global RNG must not matter
    b = sample(G, 6, seed=7)
    c = sample(G, 6, seed=8)
    assert a.shape == (6, 1, 16, 16) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    assert (a - c).abs().mean() > 0.05  # different seeds give visibly different images


def test_sample_uses_the_seeded_latents(G):
    with torch.no_grad():
        want = G(latents(5, LATENT, seed=3)).clamp(-1, 1)
    assert torch.equal(sample(G, 5, seed=3), want)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.0])
def test_truncation_bounds_latents(G, t):
    z = latents(64, LATENT, seed=0, truncation=t)
    assert z.abs().max() <= t
    # values are redrawn, not clamped: hardly any sit exactly on the bound
    assert (z.abs() == t).float().mean() < 0.01
    assert torch.equal(z, latents(64, LATENT, seed=0, truncation=t))
    with torch.no_grad():
        want = G(z).clamp(-1, 1)
    assert torch.equal(sample(G, 64, seed=0, truncation=t), want)


def test_truncation_changes_images_and_must_be_positive(G):
    assert not torch.equal(sample(G, 4, seed=0, truncation=0.5), sample(G, 4, seed=0))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="truncation"):
            latents(4, LATENT, seed=0, truncation=bad)


# --------------------------------------------------------------------------- labels


def test_conditional_default_labels_cycle(Gc):
    z = latents(7, LATENT, seed=2)
    with torch.no_grad():
        want = Gc(z, torch.tensor([0, 1, 2, 3, 4, 0, 1])).clamp(-1, 1)
    assert torch.equal(sample(Gc, 7, seed=2), want)


def test_conditional_explicit_labels(Gc):
    z = latents(4, LATENT, seed=2)
    with torch.no_grad():
        threes = Gc(z, torch.full((4,), 3)).clamp(-1, 1)
        mixed = Gc(z, torch.tensor([4, 0, 4, 1])).clamp(-1, 1)
    assert torch.equal(sample(Gc, 4, seed=2, labels=3), threes)
    assert torch.equal(sample(Gc, 4, seed=2, labels=torch.tensor([4, 0, 4, 1])), mixed)
    assert not torch.equal(threes, mixed)


@pytest.mark.parametrize("labels", [5, -1, 99, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 5])])
def test_bad_labels_raise(Gc, labels):
    with pytest.raises(ValueError, match="labels"):
        sample(Gc, 4, seed=0, labels=labels)


def test_unconditional_ignores_labels(G):
    assert torch.equal(sample(G, 3, seed=1, labels=2), sample(G, 3, seed=1))


# --------------------------------------------------------------------------- PNG grids


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


@pytest.mark.parametrize(("n", "nrow", "channels"), [(16, 8, 1), (10, 4, 1), (6, 8, 3), (9, 3, 3)])
def test_png_grid_size_mode_and_pixels(n, nrow, channels):
    G = make_g(channels=channels)
    images = sample(G, n, seed=0)
    data = png_grid(images, nrow=nrow)
    img = Image.open(io.BytesIO(data))
    img.load()
    cols = min(nrow, n)
    rows = -(-n // cols)
    assert img.size == (cols * (16 + 2) + 2, rows * (16 + 2) + 2)
    assert img.mode == ("L" if channels == 1 else "RGB")
    pixels = np.asarray(img)
    grid = to_uint8_grid(images, nrow=nrow).numpy()
    assert np.array_equal(pixels, grid[:, :, 0] if channels == 1 else grid)
    # the first image sits after 2px of black padding; [-1, 1] maps onto 0..255
    first = ((images[0].permute(1, 2, 0) + 1) / 2 * 255).round().to(torch.uint8).numpy()
    tile = pixels[2:18, 2:18]
    assert np.array_equal(tile, first[:, :, 0] if channels == 1 else first)
    assert (pixels[:2] == 0).all() and (pixels[:, :2] == 0).all()
    # no time or text chunks: the bytes depend on the pixels alone
    assert set(png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}


def test_png_grid_is_byte_identical_for_identical_input(G):
    a = png_grid(sample(G, 16, seed=4))
    b = png_grid(sample(G, 16, seed=4).clone())
    assert a == b
    assert a != png_grid(sample(G, 16, seed=5))


def test_png_grid_extremes():
    images = torch.stack([torch.full((1, 16, 16), -1.0), torch.full((1, 16, 16), 1.0)])
    pixels = np.asarray(Image.open(io.BytesIO(png_grid(images, nrow=2))))
    assert (pixels[2:18, 2:18] == 0).all() and (pixels[2:18, 20:36] == 255).all()


# --------------------------------------------------------------------------- interpolation


def test_interpolate_endpoints_equal_samples(G):
    walk = interpolate(G, from_seed=3, to_seed=11, steps=5)
    assert walk.shape == (5, 1, 16, 16)
    assert torch.allclose(walk[0], sample(G, 1, seed=3)[0], atol=1e-5)
    assert torch.allclose(walk[-1], sample(G, 1, seed=11)[0], atol=1e-5)
    assert not torch.allclose(walk[2], walk[0], atol=1e-3)
    assert not torch.allclose(walk[2], walk[-1], atol=1e-3)
    assert torch.equal(walk, interpolate(G, from_seed=3, to_seed=11, steps=5))


def test_interpolate_conditional_keeps_one_class(Gc):
    walk = interpolate(Gc, from_seed=1, to_seed=2, steps=3, label=4)
    assert torch.allclose(walk[0], sample(Gc, 1, seed=1, labels=4)[0], atol=1e-5)
    assert torch.allclose(walk[-1], sample(Gc, 1, seed=2, labels=4)[0], atol=1e-5)
    default = interpolate(Gc, from_seed=1, to_seed=2, steps=3)
    assert torch.allclose(default[-1], sample(Gc, 1, seed=2, labels=0)[0], atol=1e-5)
    assert not torch.equal(default, walk)
    with pytest.raises(ValueError, match="labels"):
        interpolate(Gc, from_seed=1, to_seed=2, steps=3, label=5)


@pytest.mark.parametrize("steps", [0, 1])
def test_interpolate_needs_two_steps(G, steps):
    with pytest.raises(ValueError, match="steps"):
        interpolate(G, 0, 1, steps)
