"""The training-memory estimate of translation configs: every net of the kind, the forwards a
real step makes, EMA and pools only where configured, unresolved channels as 3."""

from __future__ import annotations

import pytest
import torch

from gan_core.data.pairs import load_pairs
from gan_core.jobconfig import parse_config
from gan_core.memory import estimate_training_memory
from gan_core.translation.nets import build_patch_discriminator, build_translator
from gan_core.translation.run import resolve_translation_config
from gan_core.translation.state import PairBatcher, TranslationState
from gan_core.translation.steps import translation_step
from tests.gan_core.test_memory import measure_fresh
from tests.gan_core.test_translation_training import make_unpaired_folder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/gan_core/conftest.py

SMALL = {"image_size": 32, "g_width": 8, "d_width": 8, "batch_size": 2}
_FLOAT = 4


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def per_image(estimate, batch_size: int) -> float:
    """The activations one image costs, as the estimate counts them (before the 1.5 margin)."""
    return estimate.activation_bytes / 1.5 / batch_size / _FLOAT


def test_it_scales_with_batch_and_size_and_refuses_the_absurd():
    for kind in ("paired", "unpaired"):
        small = estimate_training_memory(parse_config({"kind": kind, "batch_size": 4}))
        double = estimate_training_memory(parse_config({"kind": kind, "batch_size": 8}))
        assert double.weight_bytes == small.weight_bytes
        assert abs(double.activation_bytes - 2 * small.activation_bytes) <= 8
        bigger = estimate_training_memory(
            parse_config({"kind": kind, "batch_size": 8, "image_size": 64})
        )
        assert bigger.activation_bytes > 3 * double.activation_bytes
    absurd = estimate_training_memory(
        parse_config(
            {
                "kind": "unpaired",
                "image_size": 256,
                "g_width": 512,
                "d_width": 512,
                "batch_size": 1024,
            }
        )
    )
    assert absurd.total_bytes > 1 << 40
    assert "GiB" in absurd.describe()


def test_the_nets_of_each_kind_are_counted():
    paired = estimate_training_memory(parse_config({"kind": "paired", **SMALL}))
    assert paired.generator_params == n_params(build_translator("unet", 3, 3, 32, 8))
    assert paired.discriminator_params == n_params(
        build_patch_discriminator(3, 32, 8, condition_channels=3)
    )
    unpaired = estimate_training_memory(
        parse_config({"kind": "unpaired", **SMALL, "channels_a": 1, "channels_b": 3})
    )
    G = [build_translator("resnet", 1, 3, 32, 8), build_translator("resnet", 3, 1, 32, 8)]
    D = [build_patch_discriminator(3, 32, 8), build_patch_discriminator(1, 32, 8)]
    assert unpaired.generator_params == sum(map(n_params, G))
    assert unpaired.discriminator_params == sum(map(n_params, D))
    # weights: parameters, gradients and two Adam moments each, and the pools of 50
    params = unpaired.generator_params + unpaired.discriminator_params
    assert unpaired.weight_bytes == (4 * params + 50 * (1 + 3) * 32 * 32) * _FLOAT


def test_ema_and_pools_only_where_configured():
    base = {"kind": "unpaired", **SMALL}
    plain = estimate_training_memory(parse_config(base))
    ema = estimate_training_memory(parse_config(base | {"ema_decay": 0.999}))
    assert ema.weight_bytes - plain.weight_bytes == plain.generator_params * _FLOAT
    no_pool = estimate_training_memory(parse_config(base | {"pool_size": 0}))
    assert plain.weight_bytes - no_pool.weight_bytes == 50 * 6 * 32 * 32 * _FLOAT
    paired = parse_config({"kind": "paired", **SMALL})
    paired_ema = parse_config({"kind": "paired", **SMALL, "ema_decay": 0.9})
    g = estimate_training_memory(paired).generator_params
    assert estimate_training_memory(paired_ema).weight_bytes == (
        estimate_training_memory(paired).weight_bytes + g * _FLOAT
    )


def test_unresolved_fields_count_as_three_channels_with_the_identity_loss():
    for kind in ("paired", "unpaired"):
        unresolved = parse_config({"kind": kind, **SMALL})
        assert unresolved.channels_a is None
        explicit = {"channels_a": 3, "channels_b": 3}
        if kind == "unpaired":
            explicit["lambda_identity"] = 0.5
        resolved = parse_config({"kind": kind, **SMALL, **explicit})
        assert estimate_training_memory(unresolved) == estimate_training_memory(resolved)
    with_identity = estimate_training_memory(parse_config({"kind": "unpaired", **SMALL}))
    without = estimate_training_memory(
        parse_config({"kind": "unpaired", **SMALL, "lambda_identity": 0.0})
    )
    assert without.activation_bytes < with_identity.activation_bytes
    assert without.weight_bytes == with_identity.weight_bytes


def count_step_activations(config, data) -> int:
    """Every leaf module output of every net over one real training step of batch 1."""
    config = resolve_translation_config(config, data)
    state = TranslationState(config, torch.device("cpu"))
    batcher = PairBatcher(data, 1, seed=0, device=torch.device("cpu"))
    total = 0

    def count(_m, _i, out):
        nonlocal total
        total += out.numel()

    for net in state.nets.values():
        for m in net.modules():
            if not list(m.children()):
                m.register_forward_hook(count)
    translation_step(state, batcher).step()
    return total


@pytest.mark.parametrize("kind", ["paired", "unpaired-identity", "unpaired-no-identity"])
def test_the_forwards_counted_are_those_a_real_step_makes(tmp_path, kind):
    if kind == "paired":
        data = load_pairs("shapes-edges", image_size=32, max_items=16)
        config = parse_config({"kind": "paired", **SMALL, "batch_size": 1})
    else:
        root = make_unpaired_folder(tmp_path, n_a=5, n_b=5, grey_b=False)
        data = load_pairs(f"pairs:{root}", image_size=32, pairing="unpaired")
        identity = {} if kind == "unpaired-identity" else {"lambda_identity": 0.0}
        config = parse_config({"kind": "unpaired", **SMALL, "batch_size": 1, **identity})
    estimate = estimate_training_memory(resolve_translation_config(config, data))
    assert per_image(estimate, 1) == pytest.approx(count_step_activations(config, data), rel=1e-6)


# Run in a fresh interpreter: memory freed by earlier tests in this process would be reused
# without raising the peak (and this run's freed memory would hide another test's peak).
MEASURE = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from gan_core.data.pairs import load_pairs
from gan_core.jobconfig import parse_config
from gan_core.memory import estimate_training_memory
from gan_core.training import train
from tests.gan_core.test_memory import _peak_rss_bytes

config = parse_config(json.loads(sys.argv[1]))
data = load_pairs(config.dataset, image_size=config.image_size, pairing=config.kind)
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = _peak_rss_bytes()
train(config, sys.argv[2], dataset=data)
print(json.dumps([_peak_rss_bytes() - before, estimate_training_memory(config).total_bytes]))
"""


def test_the_estimate_is_near_what_training_takes(tmp_path):
    # CycleGAN at 64 px, widths 16, batch 8: measured 442 MiB against an estimate of 487
    root = make_unpaired_folder(tmp_path / "data", n_a=12, n_b=12, grey_b=False)
    config = {
        "kind": "unpaired",
        "dataset": f"pairs:{root}",
        "image_size": 64,
        "g_width": 16,
        "d_width": 16,
        "batch_size": 8,
        "steps": 1,
        "checkpoint_every": 100,
        "device": "cpu",
    }
    used, estimate = measure_fresh(MEASURE, config, tmp_path / "run")
    assert estimate / 4 < used < estimate * 2, (used >> 20, estimate >> 20)
