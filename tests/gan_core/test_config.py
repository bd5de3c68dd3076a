"""TrainConfig: the default recipe, immutability, validation messages, JSON round trip."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from gan_core.checkpoint import list_checkpoints
from gan_core.config import MLP_MAX_PIXELS, TrainConfig
from gan_core.data import DatasetError, DatasetInfo, ImageTensorDataset
from gan_core.training import train


def test_defaults_are_a_dcgan_recipe():
    c = TrainConfig()
    assert c.arch == "dcgan"
    assert c.loss == "hinge"
    assert c.ema_decay is not None and 0.0 < c.ema_decay < 1.0
    assert c.augment_ops == ()  # off: measured to hurt on large datasets (benchmarks/quality.py)
    assert c.g_betas == (0.0, 0.99) and c.d_betas == (0.0, 0.99)
    assert c.g_lr == c.d_lr == 8e-4
    # width 32 for 4,000 steps: on a CPU, the old default's FD (width 64, 3,000 steps) or better
    # in half its time or less
    assert (c.g_width, c.d_width, c.steps) == (32, 32, 4000)
    assert c.dataset == "shapes"
    assert c.conditional is False and c.num_classes is None
    assert c.precision == "auto"  # resolved to bf16 or fp32 when the run starts
    # channels are taken from the dataset when training starts
    assert c.channels is None and not c.resolved


def test_config_is_frozen():
    c = TrainConfig()
    with pytest.raises(ValidationError):
        c.steps = 10  # type: ignore[misc]
    assert c.steps == TrainConfig().steps


def test_resolved_property():
    assert TrainConfig(channels=1).resolved
    assert not TrainConfig(channels=1, conditional=True).resolved
    assert TrainConfig(channels=1, conditional=True, num_classes=5).resolved


def _error_text(**kw) -> str:
    with pytest.raises(ValidationError) as info:
        TrainConfig(**kw)
    return str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_size": 100}, "image_size"),  # 100 = 25 * 4: base 25 is not 4..7
        ({"precision": "fp16", "device": "cpu"}, "precision"),
        ({"augment": "translation,rotate"}, "augment"),
        ({"g_betas": (0.5, 1.0)}, "g_betas"),
        ({"d_betas": (-0.1, 0.9)}, "d_betas"),
        ({"num_classes": 5}, "num_classes"),
        ({"gp_weight": 5.0, "loss": "hinge"}, "gp_weight"),
        ({"r1_gamma": -1.0}, "r1_gamma"),
        ({"r2_gamma": 1001.0}, "r2_gamma"),
        ({"reg_every": 0}, "reg_every"),
        ({"reg_every": 4}, "reg_every"),  # lazy regularisation of no penalty
        ({"lr_decay_start": 0.5}, "lr_decay_start"),  # a decay start with no decay
        ({"lr_schedule": "cosine", "lr_decay_start": 1.0}, "lr_decay_start"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"arch": "mlp", "image_size": 128}, "image_size"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"image_size": 8}, "image_size"),
        ({"batch_size": 1}, "batch_size"),
        ({"loss": "wasserstein"}, "loss"),
    ],
)
def test_bad_configs_name_the_field(kwargs, field):
    assert field in _error_text(**kwargs)


@pytest.mark.parametrize("size", [16, 28, 32, 40, 48, 64, 96, 128, 256])
def test_valid_dcgan_sizes(size):
    assert TrainConfig(image_size=size).image_size == size


def test_mlp_limit_counts_channels():
    # 64px x 3 channels is exactly the limit and fits; a bigger side with 3 channels fails
    assert MLP_MAX_PIXELS == 64 * 64 * 3
    assert TrainConfig(arch="mlp", image_size=64, channels=3).image_size == 64
    assert "image_size" in _error_text(arch="mlp", image_size=72, channels=3)
    # the mlp has no dcgan side constraint (30 is no DCGAN side)
    assert "image_size" in _error_text(image_size=30)
    assert TrainConfig(arch="mlp", image_size=30).image_size == 30


def test_gp_weight_allowed_where_meaningful():
    assert TrainConfig(loss="wgan-gp", gp_weight=5.0).gp_weight == 5.0
    # the default and 0 are accepted for any loss (0 = "no penalty" is not misleading)
    assert TrainConfig(loss="hinge", gp_weight=0.0).gp_weight == 0.0
    assert TrainConfig(loss="hinge", gp_weight=10.0).gp_weight == 10.0
    assert "gp_weight" in _error_text(loss="hinge", gp_weight=5.0)


def test_r1_r2_with_any_loss_and_they_mark_d_as_penalised():
    assert not TrainConfig().per_sample_penalty
    assert TrainConfig(loss="wgan-gp").per_sample_penalty
    assert TrainConfig(loss="hinge", r1_gamma=1.0).per_sample_penalty
    c = TrainConfig(loss="rpgan", r1_gamma=0.5, r2_gamma=0.5, reg_every=16)
    assert c.per_sample_penalty and c.reg_every == 16
    assert not TrainConfig(loss="rpgan").per_sample_penalty


def test_lr_schedules_decay_from_their_start_towards_zero():
    steps = 1000
    const = TrainConfig(steps=steps)
    assert {const.lr_factor(s) for s in (0, 500, 999)} == {1.0}
    linear = TrainConfig(steps=steps, lr_schedule="linear")
    assert [linear.lr_factor(s) for s in (0, 250, 500, 999)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.001]
    )
    cosine = TrainConfig(steps=steps, lr_schedule="cosine")
    assert [cosine.lr_factor(s) for s in (0, 500, 999)] == pytest.approx(
        [1.0, 0.5, (1 + math.cos(math.pi * 0.999)) / 2]
    )
    late = TrainConfig(steps=steps, lr_schedule="linear", lr_decay_start=0.5)
    assert [late.lr_factor(s) for s in (0, 499, 500, 750, 999)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.5, 0.002]
    )
    assert all(0 < f.lr_factor(steps - 1) < 0.01 for f in (linear, cosine, late))


def test_augment_policy_normalised():
    assert TrainConfig(augment=" color , translation,color").augment == "color,translation"
    for off in (None, "", "none", "off"):
        c = TrainConfig(augment=off)
        assert c.augment is None and c.augment_ops == ()


def test_bad_policy_message_lists_choices():
    text = _error_text(augment="spin")
    assert "augment" in text and "spin" in text and "cutout" in text


def test_precision_with_auto_or_cuda_device_is_accepted():
    # autocast is chosen at run time on CUDA; the config alone must not reject it
    assert TrainConfig(precision="bf16", device="auto").precision == "bf16"
    assert TrainConfig(precision="bf16", device="cpu").precision == "bf16"  # CPU autocast
    assert TrainConfig(precision="fp16", device="cuda").precision == "fp16"
    assert "precision" in _error_text(precision="fp16", device="cpu")


def test_conditional_builtin_is_valid():
    # shapes is labelled, so conditional is accepted and num_classes resolves later
    c = TrainConfig(conditional=True)
    assert c.conditional and c.num_classes is None


def test_conditional_on_unlabeled_data_fails_at_train(tmp_path):
    images = torch.zeros(16, 1, 16, 16, dtype=torch.uint8)
    ds = ImageTensorDataset(images, None, DatasetInfo("unlabeled", 1, None, 16))
    c = TrainConfig(
        dataset="npz:/nowhere.npz",
        conditional=True,
        image_size=16,
        g_width=8,
        d_width=8,
        batch_size=8,
        steps=1,
        latent_dim=8,
    )
    with pytest.raises(DatasetError, match="conditional"):
        train(c, tmp_path / "run", dataset=ds)
    assert list_checkpoints(tmp_path / "run") == []


def test_json_round_trip():
    c = TrainConfig(
        arch="dcgan",
        image_size=28,
        channels=1,
        conditional=True,
        num_classes=10,
        loss="wgan-gp",
        gp_weight=5.0,
        r1_gamma=0.1,
        r2_gamma=0.2,
        reg_every=8,
        d_steps=3,
        g_betas=(0.0, 0.9),
        augment="color,cutout",
        ema_decay=None,
        seed=2**40,
        precision="bf16",
        device="auto",
    )
    dumped = c.model_dump(mode="json")
    again = TrainConfig.model_validate(dumped)
    assert again == c
    assert again.g_betas == (0.0, 0.9)  # a JSON list comes back as the tuple
    assert TrainConfig.model_validate_json(c.model_dump_json()) == c
    assert TrainConfig.model_validate(TrainConfig().model_dump(mode="json")) == TrainConfig()
