"""precision "auto" (the default): bf16 where the device runs it natively, fp32 elsewhere;
resolved when a run starts, so the stored config and every checkpoint carry the concrete
precision, and a resume keeps the one the run used."""

from __future__ import annotations

import pytest
import torch

from gan_core.checkpoint import list_checkpoints, load_checkpoint, read_meta
from gan_core.config import TrainConfig
from gan_core.inference import cpu_has_fast_bf16
from gan_core.jobconfig import parse_config
from gan_core.precision import auto_precision, resolve_precision
from gan_core.training import TrainHooks, train
from tests.tiny import tiny

CPU = torch.device("cpu")
HERE = resolve_precision("auto", CPU)  # what auto is on this machine's CPU
OTHER = "fp32" if HERE == "bf16" else "bf16"


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**tiny(device="cpu", **kw))


@pytest.mark.parametrize(
    ("device_type", "cuda_bf16", "cpu_bf16", "expected"),
    [
        ("cuda", True, False, "bf16"),  # Ampere and later
        ("cuda", False, True, "fp32"),  # an older card: the CPU's bf16 is not what trains
        ("cpu", False, True, "bf16"),  # AVX-512 BF16 or AMX
        ("cpu", True, False, "fp32"),  # the card's bf16 says nothing of the CPU's
        ("cpu", False, False, "fp32"),  # emulated bf16 would be several times slower
        ("mps", True, True, "fp32"),  # a device the resolver knows nothing of
    ],
)
def test_auto_is_bf16_only_where_the_device_has_it(device_type, cuda_bf16, cpu_bf16, expected):
    got = auto_precision(device_type, cuda_bf16_supported=cuda_bf16, cpu_fast_bf16=cpu_bf16)
    assert got == expected


@pytest.mark.parametrize(
    ("nets", "cpu", "cuda"),
    [
        ("dcgan", "bf16", "bf16"),  # 1.9-2.4x the fp32 loop on a quiet CPU with native bf16
        ("resnet", "bf16", "bf16"),  # 1.31x there
        ("mlp", "fp32", "bf16"),  # not measured on a CPU
        ("translation", "bf16", "bf16"),  # CycleGAN 1.15x, pix2pix 0.97x
    ],
)
def test_on_a_cpu_auto_is_bf16_only_for_the_nets_measured(nets, cpu, cuda):
    facts = {"cuda_bf16_supported": True, "cpu_fast_bf16": True, "nets": nets}
    assert auto_precision("cpu", **facts) == cpu
    assert auto_precision("cuda", **facts) == cuda


def test_resolving_reads_this_machine_and_leaves_explicit_choices_alone():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, CPU) == explicit
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", CPU)


def test_the_default_is_auto_for_every_kind():
    assert TrainConfig().precision == "auto"
    for kind in ("paired", "unpaired"):
        assert parse_config({"kind": kind}).precision == "auto"


def test_a_run_stores_the_precision_it_trained_in(tmp_path, shapes16):
    started = []
    hooks = TrainHooks(on_start=lambda config, data: started.append(config))
    result = train(cfg(steps=4, checkpoint_every=2), tmp_path, hooks, dataset=shapes16)
    assert result.config.precision == HERE
    assert [c.precision for c in started] == [HERE]  # what the service records on the job
    metas = [read_meta(c) for c in list_checkpoints(tmp_path)]
    assert len(metas) == 2 and {m["config"]["precision"] for m in metas} == {HERE}


def test_a_translation_run_stores_the_precision_it_trained_in(tmp_path):
    config = parse_config(
        {"kind": "paired", "dataset": "shapes-edges", "image_size": 32, "g_width": 8}
        | {"d_width": 8, "batch_size": 2, "device": "cpu", "steps": 1, "checkpoint_every": 1}
    )
    assert config.precision == "auto"
    result = train(config, tmp_path)
    here = resolve_precision("auto", CPU, "translation")
    assert result.config.precision == here
    assert read_meta(result.checkpoint)["config"]["precision"] == here


def _tensors(ckpt_dir) -> dict[str, torch.Tensor]:
    _, gen, state = load_checkpoint(ckpt_dir)
    return gen | state


def _stop_after(n: int) -> TrainHooks:
    seen: list[int] = []
    return TrainHooks(
        on_progress=lambda p: seen.append(p.step),
        should_stop=lambda: bool(seen) and seen[-1] >= n,
        progress_interval=0,
    )


def test_a_resume_under_auto_keeps_the_precision_the_run_used(tmp_path, shapes16):
    """A checkpoint made in the precision auto does *not* pick here resumes in it, and ends
    with the very tensors of a run never interrupted in that precision."""
    run = cfg(steps=8, checkpoint_every=4, precision=OTHER)
    straight = train(run, tmp_path / "a", dataset=shapes16)
    first = train(run, tmp_path / "b", _stop_after(3), dataset=shapes16)
    assert first.status == "canceled" and first.step == 3
    resumed = train(cfg(steps=8, checkpoint_every=4), tmp_path / "b", dataset=shapes16)
    assert resumed.step == 8 and resumed.config.precision == OTHER
    assert read_meta(resumed.checkpoint)["config"]["precision"] == OTHER
    a, b = _tensors(straight.checkpoint), _tensors(resumed.checkpoint)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_an_explicit_precision_on_resume_still_changes_it(tmp_path, shapes16):
    run = cfg(steps=4, checkpoint_every=2, precision=OTHER)
    first = train(run, tmp_path, _stop_after(2), dataset=shapes16)
    assert first.step == 2
    resumed = train(cfg(steps=4, checkpoint_every=2, precision=HERE), tmp_path, dataset=shapes16)
    assert resumed.config.precision == HERE
    assert read_meta(resumed.checkpoint)["config"]["precision"] == HERE
