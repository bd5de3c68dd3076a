"""The training loop: hooks, checkpoint cadence, determinism, exact resume, cancel, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from gan_core import state
from gan_core.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_generator,
    read_meta,
    step_dir_name,
)
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.training import Progress, TrainHooks, TrainingDiverged, train
from tests.nan_loss import nan_d_loss_from
from tests.tiny import tiny

TINY = tiny(device="cpu")


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**(TINY | kw))


def ckpt_steps(run_dir) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(run_dir)]


def all_tensors(ckpt_dir) -> dict[str, torch.Tensor]:
    meta, gen, state = load_checkpoint(ckpt_dir)
    assert not set(gen) & set(state)
    return gen | state


def assert_same_checkpoint(a, b, *, ignore_config: tuple[str, ...] = ()) -> None:
    """Every tensor (G, EMA G, D, optimizer state, RNG, data order) and optimizer meta equal."""
    ta, tb = all_tensors(a), all_tensors(b)
    assert sorted(ta) == sorted(tb)
    different = [k for k in ta if not (ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]))]
    assert different == []
    ma, mb = read_meta(a), read_meta(b)
    assert ma["step"] == mb["step"]
    assert ma["optimizers"] == mb["optimizers"]
    for key in ignore_config:
        ma["config"].pop(key), mb["config"].pop(key)
    assert ma["config"] == mb["config"]


# --------------------------------------------------------------------------- a plain run


def test_run_hooks_cadence_and_pruning(tmp_path, shapes16):
    progress: list[Progress] = []
    saved = []
    hooks = TrainHooks(on_progress=progress.append, on_checkpoint=saved.append, progress_interval=0)
    c = cfg(steps=10, checkpoint_every=3, keep_checkpoints=2)
    result = train(c, tmp_path, hooks, dataset=shapes16)

    assert result.status == "succeeded" and result.step == 10
    # every checkpoint_every steps, plus the final step; on_checkpoint once for each
    assert [i.step for i in saved] == [3, 6, 9, 10]
    assert [i.path.name for i in saved] == [step_dir_name(s) for s in (3, 6, 9, 10)]
    assert all(
        i.size_bytes > 0 and set(i.files) == {"generator.safetensors", "train_state.safetensors"}
        for i in saved
    )
    # pruned to the newest keep_checkpoints
    assert ckpt_steps(tmp_path) == [9, 10]
    assert result.checkpoint == tmp_path / "checkpoints" / step_dir_name(10)
    # the resolved config is returned and stored
    assert result.config.channels == 1 and result.config.resolved
    assert read_meta(result.checkpoint)["config"] == result.config.model_dump(mode="json")

    # progress_interval=0: one report per step
    assert [p.step for p in progress] == list(range(1, 11))
    for p in progress:
        assert p.total_steps == 10
        assert set(p.losses) == {"d", "g"}
        assert all(math.isfinite(v) for v in p.losses.values())
        assert p.images_per_sec > 0
        assert p.eta_seconds is not None and p.eta_seconds >= 0
    assert progress[-1].eta_seconds == 0
    epochs = [p.epoch for p in progress]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(10 * 8 / len(shapes16))
    # the hook saw the same losses that went into the checkpoint
    assert saved[-1].losses == progress[-1].losses


def test_default_progress_interval_still_reports_the_end(tmp_path, shapes16):
    progress: list[Progress] = []
    hooks = TrainHooks(on_progress=progress.append, progress_interval=3600)
    train(cfg(steps=10, checkpoint_every=100), tmp_path, hooks, dataset=shapes16)
    steps = [p.step for p in progress]
    # not one report per step: at most an early "it started" report, and always the end
    assert steps[-1] == 10 and set(steps) <= {1, 10} and len(steps) == len(set(steps))
    assert progress[-1].images_per_sec > 0 and progress[-1].eta_seconds == 0


def test_dataset_loaded_from_config_when_not_given(tmp_path):
    result = train(cfg(steps=2, batch_size=4), tmp_path)
    assert result.status == "succeeded"
    meta = read_meta(result.checkpoint)
    assert meta["config"]["channels"] == 1
    assert meta["epoch"] > 0


# --------------------------------------------------------------------------- determinism


def generator_weights(ckpt_dir) -> dict[str, torch.Tensor]:
    _, gen, _ = load_checkpoint(ckpt_dir)
    return gen


def test_same_seed_same_weights_different_seed_differs(tmp_path, shapes16):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        runs[name] = train(cfg(steps=4, seed=seed), tmp_path / name, dataset=shapes16).checkpoint
    a, b, c = (generator_weights(runs[k]) for k in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    float_keys = [k for k in a if a[k].is_floating_point()]
    assert any(not torch.equal(a[k], c[k]) for k in float_keys)


# --------------------------------------------------------------------------- resume


def stop_after(n: int, seen: list[int]) -> TrainHooks:
    """Hooks that record every step and ask to stop once step n was reported."""
    return TrainHooks(
        on_progress=lambda p: seen.append(p.step),
        should_stop=lambda: bool(seen) and seen[-1] >= n,
        progress_interval=0,  # report and check should_stop after every step
    )


RESUME_CASES = {
    "ema-augment": {"augment": "translation,cutout"},
    "wgan-gp-conditional-dsteps2": {"loss": "wgan-gp", "conditional": True, "d_steps": 2},
    "bce-color-no-ema": {"loss": "bce", "augment": "color,translation,cutout", "ema_decay": None},
    "bf16-autocast-cpu": {"precision": "bf16", "device": "cpu"},
    "fp32-cpu": {"precision": "fp32", "device": "cpu"},
    # the default, resolved when the run starts (bf16 on a CPU with native bf16, else fp32);
    # the resume's config says auto again and gets what the checkpoint says
    "precision-auto": {"precision": "auto"},
    # lazy R1/R2 every 4th D update: the resume at step 6 must land on the same updates
    "rpgan-r1-r2-lazy": {"loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0, "reg_every": 4},
    # spectral norm's power-iteration vectors are D state: restored, not restarted
    "spectral-norm": {"spectral_norm": True},
    # adaptive p (and the statistics of the interval in progress: 5 D updates, so the stop at
    # step 6 falls inside one) is run state; a fast ada_kimg so that p really moves
    "adaptive-augment": {
        "augment_p": "adaptive",
        "augment": "translation,flip,rot90,color",
        "ada_interval": 5,
        "ada_kimg": 0.1,
    },
    "fixed-p-geometric": {"augment": "flip,rot90,translation", "augment_p": 0.5},
}


def test_bf16_on_cpu_is_deterministic_and_really_bf16(tmp_path, shapes16):
    a = train(cfg(steps=4, precision="bf16", device="cpu"), tmp_path / "a", dataset=shapes16)
    b = train(cfg(steps=4, precision="bf16", device="cpu"), tmp_path / "b", dataset=shapes16)
    f = train(cfg(steps=4, precision="fp32", device="cpu"), tmp_path / "f", dataset=shapes16)
    assert_same_checkpoint(a.checkpoint, b.checkpoint)
    wa, wf = generator_weights(a.checkpoint), generator_weights(f.checkpoint)
    assert any(not torch.equal(wa[k], wf[k]) for k in wa if wa[k].is_floating_point())
    assert all(wa[k].dtype == wf[k].dtype for k in wa)  # weights stay fp32 (autocast)


@pytest.mark.parametrize("extra", RESUME_CASES.values(), ids=RESUME_CASES.keys())
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, shapes16, extra):
    c = cfg(steps=12, checkpoint_every=4, **extra)
    a = train(c, tmp_path / "a", dataset=shapes16)
    assert a.status == "succeeded" and a.step == 12

    seen: list[int] = []
    b1 = train(c, tmp_path / "b", stop_after(6, seen), dataset=shapes16)
    assert b1.status == "canceled" and b1.step == 6
    assert seen == [1, 2, 3, 4, 5, 6]
    assert ckpt_steps(tmp_path / "b") == [4, 6]  # cadence checkpoint, then the stop one
    # the checkpoint at the stop step equals the uninterrupted run's state at that step
    # (compared with a fresh 6-step run, since run A only kept 4, 8, 12)
    a6 = train(cfg(steps=6, checkpoint_every=4, **extra), tmp_path / "a6", dataset=shapes16)
    assert_same_checkpoint(a6.checkpoint, b1.checkpoint, ignore_config=("steps",))

    seen.clear()
    b2 = train(
        c,
        tmp_path / "b",
        TrainHooks(on_progress=lambda p: seen.append(p.step), progress_interval=0),
        dataset=shapes16,
    )
    assert b2.status == "succeeded" and b2.step == 12
    assert seen == list(range(7, 13))  # continued, not restarted
    assert ckpt_steps(tmp_path / "b") == [4, 6, 8, 12]
    assert_same_checkpoint(a.checkpoint, b2.checkpoint)
    if extra.get("augment_p") == "adaptive":
        _, _, saved = load_checkpoint(b2.checkpoint)
        assert {"ada.p", "ada.signs", "ada.count", "ada.updates"} <= set(saved)
        assert 0 < float(saved["ada.p"]) <= 1  # it moved, and the resumed run moved it alike
    if extra.get("ema_decay", 0.999) is not None:
        # the EMA generator is in the checkpoint and differs from the raw one
        gen = generator_weights(b2.checkpoint)
        assert any(k.startswith("G_ema.") for k in gen)
        assert any(
            not torch.equal(gen[k], gen["G_ema." + k[2:]])
            for k in gen
            if k.startswith("G.") and gen[k].is_floating_point()
        )


def lr_of(checkpoint, opt: str) -> float:
    """The learning rate of a run's one param group, as its checkpoint saved it."""
    (group,) = read_meta(checkpoint)["optimizers"][opt]["param_groups"]
    return group["lr"]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedule_sets_the_rates_and_resumes_exactly(tmp_path, shapes16, schedule):
    c = cfg(steps=12, checkpoint_every=4, lr_schedule=schedule, lr_decay_start=0.25)
    a = train(c, tmp_path / "a", dataset=shapes16)
    # each checkpoint holds the rates its last update used: the factor after step - 1 steps
    for ckpt_dir, step in zip(list_checkpoints(tmp_path / "a"), (4, 8, 12), strict=True):
        assert lr_of(ckpt_dir, "opt_g") == pytest.approx(c.g_lr * c.lr_factor(step - 1))
        assert lr_of(ckpt_dir, "opt_d") == pytest.approx(c.d_lr * c.lr_factor(step - 1))
    assert lr_of(a.checkpoint, "opt_g") < c.g_lr / 4  # really decayed by the end
    constant = train(cfg(steps=12, checkpoint_every=4), tmp_path / "c", dataset=shapes16)
    wa, wc = generator_weights(a.checkpoint), generator_weights(constant.checkpoint)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())

    seen: list[int] = []
    assert train(c, tmp_path / "b", stop_after(6, seen), dataset=shapes16).step == 6
    b = train(c, tmp_path / "b", dataset=shapes16)
    assert b.step == 12
    assert_same_checkpoint(a.checkpoint, b.checkpoint)


def test_a_run_that_crashed_resumes_from_its_last_periodic_checkpoint(tmp_path, shapes16):
    """A crash (the process dies: no stop checkpoint) between checkpoints: the rerun starts
    from the last periodic one, and ends with exactly the weights of a run never interrupted."""
    c = cfg(steps=12, checkpoint_every=4)
    a = train(c, tmp_path / "a", dataset=shapes16)

    class Crash(Exception):
        pass

    def crash_at_7(p) -> None:
        if p.step >= 7:
            raise Crash

    with pytest.raises(Crash):
        train(
            c,
            tmp_path / "b",
            TrainHooks(on_progress=crash_at_7, progress_interval=0),
            dataset=shapes16,
        )
    assert ckpt_steps(tmp_path / "b") == [4]  # steps 5..7 were lost with the process
    seen: list[int] = []
    b = train(
        c,
        tmp_path / "b",
        TrainHooks(on_progress=lambda p: seen.append(p.step), progress_interval=0),
        dataset=shapes16,
    )
    assert seen == list(range(5, 13))  # from the step-4 checkpoint, not from 0 or 7
    assert_same_checkpoint(a.checkpoint, b.checkpoint)


def test_resume_with_more_steps_continues(tmp_path, shapes16):
    first = train(cfg(steps=6, checkpoint_every=4), tmp_path / "b", dataset=shapes16)
    assert first.step == 6 and ckpt_steps(tmp_path / "b") == [4, 6]
    seen: list[int] = []
    hooks = TrainHooks(on_progress=lambda p: seen.append(p.step), progress_interval=0)
    more = train(cfg(steps=10, checkpoint_every=4), tmp_path / "b", hooks, dataset=shapes16)
    assert more.status == "succeeded" and more.step == 10
    assert seen == [7, 8, 9, 10]
    assert read_meta(more.checkpoint)["step"] == 10
    assert more.config.steps == 10
    # nothing in the loop depends on the planned total: same as a straight 10-step run
    straight = train(cfg(steps=10, checkpoint_every=4), tmp_path / "a", dataset=shapes16)
    assert_same_checkpoint(straight.checkpoint, more.checkpoint)


def test_resume_when_already_done_writes_nothing(tmp_path, shapes16):
    done = train(cfg(steps=3, checkpoint_every=2), tmp_path, dataset=shapes16)
    before = {p: (p / "meta.json").read_bytes() for p in list_checkpoints(tmp_path)}
    seen: list[Progress] = []
    again = train(
        cfg(steps=3, checkpoint_every=2),
        tmp_path,
        TrainHooks(on_progress=seen.append),
        dataset=shapes16,
    )
    assert again.status == "succeeded" and again.step == 3
    assert again.checkpoint == done.checkpoint
    assert seen == []
    assert {p: (p / "meta.json").read_bytes() for p in list_checkpoints(tmp_path)} == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"g_width": 16}, "g_width"),
        ({"loss": "bce"}, "loss"),
        ({"seed": 1}, "seed"),
        ({"latent_dim": 8}, "latent_dim"),
    ],
)
def test_resume_with_changed_model_field_is_refused(tmp_path, shapes16, change, field):
    train(cfg(steps=2), tmp_path, dataset=shapes16)
    with pytest.raises(ValueError, match=field):
        train(cfg(steps=4, **change), tmp_path, dataset=shapes16)
    assert ckpt_steps(tmp_path) == [2]


def test_resume_false_starts_over(tmp_path, shapes16):
    train(cfg(steps=2), tmp_path, dataset=shapes16)
    # a different architecture is fine when not resuming; the old step-2 dir is replaced
    result = train(cfg(steps=2, g_width=16), tmp_path, dataset=shapes16, resume=False)
    assert read_meta(result.checkpoint)["config"]["g_width"] == 16


# --------------------------------------------------------------------------- cancel


def test_cancel_keeps_a_checkpoint_at_the_stop_step(tmp_path, shapes16):
    saved = []
    hooks = TrainHooks(should_stop=lambda: True, on_checkpoint=saved.append, progress_interval=0)
    result = train(cfg(steps=50, checkpoint_every=100), tmp_path, hooks, dataset=shapes16)
    assert result.status == "canceled"
    assert result.step == 1  # the first check happens after the first step
    assert ckpt_steps(tmp_path) == [1]
    assert result.checkpoint == tmp_path / "checkpoints" / step_dir_name(1)
    assert [i.step for i in saved] == [1]
    assert read_meta(result.checkpoint)["step"] == 1


def test_cancel_on_a_checkpoint_step_writes_it_once(tmp_path, shapes16):
    saved = []
    seen: list[int] = []
    hooks = stop_after(4, seen)
    hooks.on_checkpoint = saved.append
    result = train(cfg(steps=50, checkpoint_every=2), tmp_path, hooks, dataset=shapes16)
    assert result.status == "canceled" and result.step == 4
    assert [i.step for i in saved] == [2, 4]
    assert ckpt_steps(tmp_path) == [2, 4]


# --------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("interval", [0, 3600], ids=["checked-every-step", "checked-at-save"])
def test_nan_loss_raises_and_keeps_no_later_checkpoint(tmp_path, shapes16, monkeypatch, interval):
    nan_d_loss_from(monkeypatch, bad_call=6)
    saved = []
    hooks = TrainHooks(on_checkpoint=saved.append, progress_interval=interval)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg(steps=12, checkpoint_every=4), tmp_path, hooks, dataset=shapes16)
    assert info.value.step == 6
    assert "step 6" in str(info.value)
    # the step-4 checkpoint was written before; nothing at or after step 6 (nor at 8)
    assert ckpt_steps(tmp_path) == [4]
    assert [i.step for i in saved] == [4]
    last = list_checkpoints(tmp_path)[-1]
    meta = read_meta(last)  # verifies the file set and hashes
    assert meta["step"] == 4 and all(math.isfinite(v) for v in meta["losses"].values())
    assert all(torch.isfinite(t).all() for t in all_tensors(last).values() if t.is_floating_point())
    assert not any(p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir())


def test_non_finite_weights_with_finite_losses_fail_before_the_checkpoint(
    tmp_path, shapes16, monkeypatch
):
    """Weights can overflow while losses stay finite: no checkpoint is written then."""

    class OverflowingEMA(state.EMA):  # the averaged G is never used in training
        def update(self, model, step):
            super().update(model, step)
            if step >= 6:
                bn = next(m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                bn.running_var.fill_(float("inf"))

    monkeypatch.setattr(state, "EMA", OverflowingEMA)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg(steps=12, checkpoint_every=4), tmp_path, dataset=shapes16)
    assert info.value.step == 8 and "weights (G_ema." in str(info.value)
    assert ckpt_steps(tmp_path) == [4]


# --------------------------------------------------------------------------- MLP baseline


def test_mlp_baseline_trains_at_28px(tmp_path):
    ds = load_dataset("shapes", image_size=28, max_items=128)
    c = TrainConfig(
        arch="mlp",
        image_size=28,
        latent_dim=100,
        loss="bce",
        batch_size=16,
        steps=4,
        checkpoint_every=4,
        device="cpu",
        augment=None,
    )
    result = train(c, tmp_path, dataset=ds)
    assert result.status == "succeeded"
    assert result.config.channels == 1
    G = load_generator(result.checkpoint)
    linears = [m for m in G.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(100, 256), (256, 28 * 28)]
    out = G(torch.randn(3, 100))
    assert out.shape == (3, 1, 28, 28) and torch.isfinite(out).all()
    assert out.abs().max() <= 1.0
