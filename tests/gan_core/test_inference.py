"""The serving fast path: a folded, channels_last generator in fp32 or bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_core import inference
from gan_core.config import TrainConfig
from gan_core.nets import build_generator
from gan_core.sampling import generate, png_grid, sample_inputs, to_uint8_grid

CONFIGS = {
    "mlp": dict(arch="mlp", image_size=16),
    "dcgan": dict(arch="dcgan", image_size=32, g_width=16),
    "dcgan-conditional": dict(
        arch="dcgan", image_size=16, g_width=16, conditional=True, num_classes=5
    ),
}


def _generator(name: str) -> nn.Module:
    """An eval-mode generator whose BatchNorms hold non-trivial statistics and affine terms,
    so that folding them is really tested (fresh ones are the identity)."""
    torch.manual_seed(0)
    G = build_generator(TrainConfig(dataset="shapes", channels=1, latent_dim=16, **CONFIGS[name]))
    for m in G.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return G.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fp32_fast_path_matches_plain_eval(name):
    G = _generator(name)
    z, y = sample_inputs(G, 24, seed=3)
    P = inference.prepare(G, "fp32")
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in P.modules())
    assert any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in G.modules())  # untouched
    torch.testing.assert_close(inference.run(P, z, y), generate(G, z, y), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bf16_within_stated_tolerance_and_same_bytes_twice(name):
    # docs/benchmarks.md's bound, measured on trained checkpoints: mean |bf16 - fp32| <= 1/255 of the
    # pixel range (0.15/255 measured). The nets here are untrained; the bound still holds.
    G = _generator(name)
    P = inference.prepare(G, "bf16")
    for seed in range(3):
        z, y = sample_inputs(G, 16, seed)
        fast = inference.run(P, z, y)
        assert fast.dtype == torch.float32 and fast.shape == generate(G, z, y).shape
        a = to_uint8_grid(fast).to(torch.int16)
        b = to_uint8_grid(generate(G, z, y)).to(torch.int16)
        assert (a - b).abs().float().mean().item() <= 1.0
        assert png_grid(inference.run(P, z, y)) == png_grid(fast)


def test_bf16_really_runs_in_bf16():
    # Not fp32 under another name: the bf16 images differ from the fp32 ones somewhere.
    G = _generator("dcgan")
    z, y = sample_inputs(G, 16, seed=0)
    fp32 = inference.run(inference.prepare(G, "fp32"), z, y)
    bf16 = inference.run(inference.prepare(G, "bf16"), z, y)
    assert not torch.equal(fp32, bf16)


def test_resolve_mode(monkeypatch):
    assert inference.resolve_mode("fp32") == "fp32"
    assert inference.resolve_mode("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        inference.resolve_mode("fp16")
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: False)
    assert inference.resolve_mode("auto") == "fp32"
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(inference, "bf16_pays", lambda: False)  # flags say yes, timing says no
    assert inference.resolve_mode("auto") == "fp32"
    monkeypatch.setattr(inference, "bf16_pays", lambda: True)
    assert inference.resolve_mode("auto") == "bf16"
    assert inference.resolve_mode("auto", "cuda") == "fp32"
