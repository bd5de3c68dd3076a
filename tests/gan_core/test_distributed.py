"""Data-parallel training (gan_core.distributed, gan_core.launch): two real rank processes
on gloo. The ranks stay bit-identical; two ranks match one process at the same global batch
up to float reduction order; with augmentation a run is deterministic for (seed, ranks)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.distributed as dist
from pydantic import ValidationError
from torch import nn

from gan_core.checkpoint import latest_checkpoint, load_checkpoint, read_meta
from gan_core.config import TrainConfig
from gan_core.distributed import DistContext
from gan_core.launch import launch
from gan_core.nets import build_generator
from gan_core.sync_batchnorm import SyncBatchNorm, convert_batchnorm
from gan_core.training import train
from tests.dist_ranks import (
    TINY,
    TOLERANCE,
    at_step,
    different,
    nets,
    shapes16,
    train_runs,
    worst_gap,
)

CASES = {
    # BatchNorm in G and D, synchronised over the global batch
    "dcgan-batchnorm": {},
    # no normalisation; R1 and R2 double-backward through D with the gradients averaged
    "resnet-rpgan-r1-r2": {"arch": "resnet", "loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0},
    # WGAN-GP's interpolation weights drawn for the global batch; two D updates per step
    "wgan-gp-dsteps2": {"loss": "wgan-gp", "d_steps": 2},
}


def runs(tmp_path, prefix: str, cases: dict[str, dict]) -> list[dict]:
    return [
        {"config": TINY | extra, "run_dir": str(tmp_path / f"{prefix}-{name}")}
        for name, extra in cases.items()
    ]


def test_ranks_stay_identical_and_match_one_process(tmp_path):
    two = launch(2, train_runs, runs(tmp_path, "two", CASES), threads=1)
    one = train_runs(None, runs(tmp_path, "one", CASES))
    assert [r["step"] for r in two] == [12] * len(CASES) == [r["step"] for r in one]
    for name in CASES:
        rank0, rank1 = nets(tmp_path / f"two-{name}", 0), nets(tmp_path / f"two-{name}", 1)
        # every weight and buffer of G, D and the EMA G (BatchNorm statistics too)
        assert different(rank0, rank1) == [], name
        assert any(k.startswith("G_ema.") for k in rank0)
        # one process against two ranks at the first checkpoint, step 6 (not at 12, where
        # training had amplified the rounding to 5e-3 on one CPU: tests/dist_ranks.py)
        single, two_at_6 = (
            at_step(tmp_path / f"one-{name}", 6),
            at_step(tmp_path / f"two-{name}", 6),
        )
        gap = worst_gap(single, two_at_6)
        assert gap < TOLERANCE, (name, gap)
        assert different(single, two_at_6), name  # not trivially equal: the order differs
        # rank 0's checkpoint holds what every rank holds
        _, gen, state = load_checkpoint(two[list(CASES).index(name)]["checkpoint"])
        saved = {k: v for k, v in (gen | state).items() if k in rank1}
        assert len(saved) == len(rank1)
        assert all(torch.equal(v, rank1[k]) for k, v in saved.items())


AUGMENTED = {
    "augment": "translation,cutout,color,flip",
    "augment_p": "adaptive",
    "ada_interval": 1,
    "ada_kimg": 0.05,  # p moves 8 * 1 / 50 = 0.16 per D update: visibly, within 12 steps
}


def test_augmented_runs_are_deterministic_for_seed_and_devices(tmp_path):
    cases = {"a": AUGMENTED, "b": AUGMENTED, "seed1": AUGMENTED | {"seed": 1}}
    launch(2, train_runs, runs(tmp_path, "two", cases), threads=1)
    a, b = nets(tmp_path / "two-a"), nets(tmp_path / "two-b")
    assert different(a, b) == []  # the same (seed, 2 ranks): the same run
    assert different(a, nets(tmp_path / "two-a", 1)) == []  # each rank augments its slice
    assert different(a, nets(tmp_path / "two-seed1"))  # and the seed matters
    assert 0 < float(a["ada.p"]) <= 1  # p moved, on both ranks alike (compared above)
    train_runs(None, runs(tmp_path, "one", {"a": AUGMENTED}))
    # one process augments with the global RNG, two ranks each with their own draws
    assert different(a, nets(tmp_path / "one-a"))


def test_batch_size_must_split_over_devices_and_devices_match_the_group(tmp_path):
    with pytest.raises(ValidationError, match="batch_size: 10 does not split evenly over 4"):
        TrainConfig(**TINY | {"devices": 4, "batch_size": 10})
    with pytest.raises(ValidationError, match="devices"):
        TrainConfig(**TINY | {"devices": 0})
    TrainConfig(**TINY | {"devices": 4, "batch_size": 12})
    config = TrainConfig(**TINY | {"devices": 2})
    with pytest.raises(ValueError, match=r"config.devices: the config asks for 2 devices but 1"):
        train(config, tmp_path, dataset=shapes16())


def test_ganforge_train_devices_starts_the_ranks(tmp_path, capsys):
    from app.cli import main

    sets = [f"--set={k}={json.dumps(v)}" for k, v in (TINY | {"steps": 4}).items()]
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--devices", "2", *sets]) == 0
    assert "succeeded at step 4" in capsys.readouterr().out
    assert read_meta(latest_checkpoint(out))["config"]["devices"] == 2
    # a global batch that does not split evenly is refused before any rank starts
    assert main(["train", "--out", str(out), "--devices", "3", *sets]) == 2
    assert "batch_size: 8 does not split evenly over 3 devices" in capsys.readouterr().err


@pytest.fixture
def one_rank_group():
    """A gloo group of this process alone: the collectives run, and sum over one rank."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield DistContext.current()
    dist.destroy_process_group()


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(6, 3, 5, 5), (6, 7)])
def test_sync_batchnorm_over_one_rank_is_batchnorm(one_rank_group, shape, momentum):
    torch.manual_seed(0)
    plain = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], momentum=momentum)
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    synced = SyncBatchNorm(copy.deepcopy(plain), one_rank_group.group)
    for _ in range(3):  # the running statistics move alike
        x = (torch.randn(shape) * 3 + 1).requires_grad_(True)
        xs = x.detach().clone().requires_grad_(True)
        out, outs = plain(x), synced(xs)
        torch.testing.assert_close(outs, out, atol=1e-5, rtol=1e-5)
        grad = torch.randn(shape)
        out.backward(grad)
        outs.backward(grad)
        torch.testing.assert_close(xs.grad, x.grad, atol=1e-5, rtol=1e-5)
    for name, t in plain.state_dict().items():
        torch.testing.assert_close(synced.state_dict()[name], t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(synced.weight.grad, plain.weight.grad, atol=1e-5, rtol=1e-5)
    plain.eval()
    synced.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(synced(x), plain(x), atol=1e-5, rtol=1e-5)


def test_converted_nets_keep_their_tensors_and_names(one_rank_group):
    G = build_generator(TrainConfig(**TINY | {"channels": 1}))
    names, params = list(G.state_dict()), list(G.parameters())
    convert_batchnorm(G, one_rank_group)
    assert list(G.state_dict()) == names
    assert all(a is b for a, b in zip(G.parameters(), params, strict=True))
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, SyncBatchNorm) for m in norms)
