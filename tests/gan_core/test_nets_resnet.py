"""arch resnet (gan_core.nets_resnet): shapes, fix-up init, no normalisation, its config
fields, training with RpGAN + R1 + R2 and exact resume, the memory estimate, ONNX export."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.utils import parametrize

from gan_core.checkpoint import load_generator, read_meta
from gan_core.config import TrainConfig, dcgan_base
from gan_core.export import export_onnx
from gan_core.memory import estimate_training_memory
from gan_core.nets import build_discriminator, build_generator
from gan_core.nets_resnet import Downsample, ResidualBlock, Upsample
from gan_core.sampling import generate, latents
from gan_core.training import Progress, TrainHooks, train
from tests.gan_core.test_training import assert_same_checkpoint, ckpt_steps, stop_after
from tests.tiny import tiny

pytestmark = pytest.mark.usefixtures("one_thread")

# every side a resnet makes from 16 to 256 px: 4..7 times a power of two >= 4 (16, 20, 24,
# 28, 32, 40, ..., 224, 256), as the DCGAN
SIZES = [s for s in range(16, 257) if dcgan_base(s) is not None]
NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
RECIPE = {"arch": "resnet", "loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0}


def resnet(**kw) -> TrainConfig:
    """A narrow resolved resnet config (width 8 x expansion 2 = one group of 16)."""
    fields = {"arch": "resnet", "channels": 3, "g_width": 8, "d_width": 8, "latent_dim": 16}
    return TrainConfig(**(fields | kw))


def nets(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build_generator(cfg), build_discriminator(cfg)


def blocks(net: nn.Module) -> list[ResidualBlock]:
    return [m for m in net.modules() if isinstance(m, ResidualBlock)]


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("size", SIZES)
def test_shapes_at_every_size(size, conditional):
    cfg = resnet(image_size=size, conditional=conditional, num_classes=5 if conditional else None)
    G, D = nets(cfg)
    z = torch.randn(3, 16)
    y = torch.tensor([0, 4, 2]) if conditional else None
    with torch.no_grad():
        x = G(z, y)
        logits = D(x, y)
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1.0
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    # one stage per side from the base (4, 6 or 7) up to size; blocks per stage by default
    # 1 up to 32 px, 2 above
    base = dcgan_base(size)
    assert base is not None
    # the basis is g_width doubled per halving of the side, capped at 8x g_width
    assert G.net.basis.shape == (min(8 * size // base, 8 * 8), base, base)
    if size in (16, 32, 64, 128, 256, 28):
        assert base == (7 if size == 28 else 4)
    stages = int(math.log2(size // base)) + 1
    per_stage = 1 if size <= 32 else 2
    assert len(blocks(G)) == len(blocks(D)) == stages * per_stage
    ups = [m for m in G.modules() if isinstance(m, Upsample)]
    downs = [m for m in D.modules() if isinstance(m, Downsample)]
    assert len(ups) == len(downs) == stages - 1
    if conditional:
        with pytest.raises(ValueError, match="pass labels"):
            G(z)


def test_the_fields_shape_the_nets():
    G, D = nets(resnet(image_size=32, blocks_per_stage=3, expansion=4, group_size=8, g_width=16))
    assert len(blocks(G)) == len(blocks(D)) == 4 * 3
    first = blocks(G)[-1]  # the 32 px stage, at g_width
    assert first.expand.out_channels == 16 * 4
    assert first.conv.groups == 16 * 4 // 8
    # widths double per halving of the side, capped at 8x the base
    g_widths = [b.expand.in_channels for b in blocks(G)[::3]]
    assert g_widths == [128, 64, 32, 16]
    d_widths = [b.expand.in_channels for b in blocks(D)[::3]]
    assert d_widths == [8, 16, 32, 64]
    assert sum(p.numel() for p in G.parameters()) != sum(
        p.numel() for p in build_generator(resnet(image_size=32, g_width=16)).parameters()
    )


# --------------------------------------------------------------------------- fix-up init


@pytest.mark.parametrize("conditional", [False, True])
def test_every_block_is_the_identity_at_init(conditional):
    cfg = resnet(image_size=64, conditional=conditional, num_classes=3 if conditional else None)
    G, D = nets(cfg)
    for net in (G, D):
        for block in blocks(net):
            width = block.expand.in_channels
            x = torch.randn(2, width, 8, 8)
            assert torch.equal(block.residual(x), torch.zeros_like(x))
            assert torch.equal(block(x), x)
            assert torch.count_nonzero(block.expand.weight) > 0  # only the last conv is zero


def test_fixup_scales_the_first_two_convs_by_the_block_count():
    cfg = resnet(image_size=32, g_width=32, d_width=32, blocks_per_stage=2)
    G, D = nets(cfg)
    total = 4 * 2  # 4 stages of 2 blocks
    for block in blocks(G) + blocks(D):
        for conv in (block.expand, block.conv):
            fan_in = conv.weight[0].numel()
            he = nn.init.calculate_gain("leaky_relu", 0.2) / math.sqrt(fan_in)
            assert conv.weight.std().item() == pytest.approx(he * total**-0.25, rel=0.15)


def test_no_normalisation_in_either_net():
    for cfg in (resnet(image_size=32), resnet(image_size=64, conditional=True, num_classes=4)):
        for net in nets(cfg):
            assert not [m for m in net.modules() if isinstance(m, NORMS)]
            assert not any(parametrize.is_parametrized(m) for m in net.modules())
            assert not any(name.endswith("weight_orig") for name, _ in net.named_parameters())
    with pytest.raises(ValidationError, match="spectral_norm: not with arch resnet"):
        resnet(spectral_norm=True)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arch": "dcgan", "blocks_per_stage": 2}, "blocks_per_stage: only used with arch resnet"),
        ({"arch": "mlp", "group_size": 16}, "group_size: only used with arch resnet"),
        ({"arch": "dcgan", "expansion": 2}, "expansion: only used with arch resnet"),
        ({"image_size": 100}, "image_size: resnet cannot produce 100px"),
        ({"image_size": 18}, "image_size: resnet cannot produce 18px"),
        ({"g_width": 12}, r"g_width: g_width x expansion \(12 x 2 = 24\)"),
        ({"group_size": 32}, r"group_size: g_width x expansion \(8 x 2 = 16\)"),
        ({"expansion": 0}, "expansion"),
        ({"blocks_per_stage": 17}, "blocks_per_stage"),
    ],
)
def test_bad_resnet_configs_name_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        resnet(**fields)


def test_defaults_and_a_stored_config_round_trip():
    cfg = TrainConfig(arch="resnet")
    assert (cfg.resnet_blocks, cfg.resnet_group_size, cfg.resnet_expansion) == (1, 16, 2)
    assert TrainConfig(arch="resnet", image_size=64).resnet_blocks == 2
    again = TrainConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg and again.blocks_per_stage is None


def test_memory_estimate_counts_the_resnet_nets():
    cfg = resnet(image_size=64, conditional=True, num_classes=10)
    G, D = nets(cfg)
    est = estimate_training_memory(cfg)
    assert est.generator_params == sum(p.numel() for p in G.parameters())
    assert est.discriminator_params == sum(p.numel() for p in D.parameters())
    wider = estimate_training_memory(resnet(image_size=64, g_width=32, d_width=32))
    assert wider.activation_bytes > 2 * est.activation_bytes
    # an unresolved config (channels from the dataset) is estimated too
    assert estimate_training_memory(TrainConfig(arch="resnet", image_size=256)).total_bytes > 0


# --------------------------------------------------------------------------- training


def run_cfg(**kw) -> TrainConfig:
    return TrainConfig(**tiny(device="cpu", **(RECIPE | kw)))


@pytest.mark.parametrize(
    "extra", [{}, {"conditional": True, "reg_every": 2}], ids=["plain", "cond"]
)
def test_trains_with_rpgan_r1_r2_and_resumes_exactly(tmp_path, shapes16, extra):
    c = run_cfg(steps=8, checkpoint_every=4, **extra)
    a = train(c, tmp_path / "a", dataset=shapes16)
    assert a.status == "succeeded" and a.step == 8
    assert read_meta(a.checkpoint)["config"]["arch"] == "resnet"

    seen: list[int] = []
    b1 = train(c, tmp_path / "b", stop_after(5, seen), dataset=shapes16)
    assert b1.status == "canceled" and b1.step == 5 and ckpt_steps(tmp_path / "b") == [4, 5]
    b2 = train(c, tmp_path / "b", TrainHooks(progress_interval=0), dataset=shapes16)
    assert b2.status == "succeeded" and b2.step == 8
    assert_same_checkpoint(a.checkpoint, b2.checkpoint)

    # it learned something: the blocks moved off the identity, and G still makes images
    G = load_generator(a.checkpoint)
    assert any(torch.count_nonzero(b.project.weight) for b in blocks(G))
    y = torch.arange(4) % G.num_classes if G.num_classes else None
    x = generate(G, latents(4, G.latent_dim, 0), y)
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all() and x.std() > 0


@pytest.mark.parametrize(
    "extra",
    [
        {"loss": "hinge", "r1_gamma": 0.0, "r2_gamma": 0.0, "augment": "translation,cutout"},
        {"loss": "bce", "r1_gamma": 0.0, "r2_gamma": 0.0, "ema_decay": None},
        {"loss": "lsgan", "r1_gamma": 0.0, "r2_gamma": 0.0, "precision": "bf16"},
        {"loss": "wgan-gp", "r1_gamma": 0.0, "r2_gamma": 0.0, "d_steps": 2},
    ],
    ids=["hinge-augment", "bce-no-ema", "lsgan-bf16", "wgan-gp"],
)
def test_trains_with_every_loss(tmp_path, shapes16, extra):
    progress: list[Progress] = []
    hooks = TrainHooks(on_progress=progress.append, progress_interval=0)
    c = run_cfg(steps=3, checkpoint_every=3, **extra)
    result = train(c, tmp_path, hooks, dataset=shapes16)
    assert result.status == "succeeded" and result.step == 3
    assert [p.step for p in progress] == [1, 2, 3]
    assert all(math.isfinite(v) for p in progress for v in p.losses.values())


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_onnx_export_matches_pytorch(tmp_path, shapes16, conditional):
    c = run_cfg(steps=4, checkpoint_every=4, conditional=conditional)
    G = load_generator(train(c, tmp_path / "run", dataset=shapes16).checkpoint)
    assert any(torch.count_nonzero(b.project.weight) for b in blocks(G))  # not the identity
    path = export_onnx(G, tmp_path / "generator.onnx").path
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (3, 5):
        z = latents(n, G.latent_dim, seed=n)
        y = torch.arange(n) % G.num_classes if conditional else None
        feed = {"z": z.numpy()} | ({"labels": y.numpy()} if y is not None else {})
        got = sess.run(["images"], feed)[0]
        want = generate(G, z, y).numpy()
        assert got.shape == want.shape == (n, 1, 16, 16)
        assert np.abs(got - want).max() < 1e-4
