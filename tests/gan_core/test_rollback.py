"""Divergence rollback: back to the last good checkpoint with halved (scheduled) rates."""

from __future__ import annotations

import pytest

from gan_core.checkpoint import read_meta
from gan_core.training import TrainHooks, TrainingDiverged, train
from tests.gan_core.test_training import cfg, lr_of
from tests.nan_loss import nan_d_loss_from


def test_a_divergence_rolls_back_to_the_last_good_checkpoint_and_finishes(
    tmp_path, shapes16, monkeypatch
):
    nan_d_loss_from(monkeypatch, bad_call=7, once=True)  # step 7 goes NaN, once
    events = []
    hooks = TrainHooks(on_rollback=events.append, progress_interval=0)
    c = cfg(steps=12, checkpoint_every=4, on_divergence="rollback")
    result = train(c, tmp_path, hooks, dataset=shapes16)
    assert result.status == "succeeded" and result.step == 12
    (event,) = events
    assert (event.attempt, event.diverged_at, event.resumed_from, event.lr_scale) == (1, 7, 4, 0.5)
    meta = read_meta(result.checkpoint)
    assert meta["rollbacks"] == 1
    lrs = [g["lr"] for g in meta["optimizers"]["opt_g"]["param_groups"]]
    assert lrs == [c.g_lr / 2]  # halved from the rollback on, in every later checkpoint
    # the default is still to fail, naming the step
    nan_d_loss_from(monkeypatch, bad_call=7, once=True)
    with pytest.raises(TrainingDiverged, match="step 7"):
        train(cfg(steps=12, checkpoint_every=4), tmp_path / "fails", dataset=shapes16)


def test_rollbacks_are_bounded(tmp_path, shapes16, monkeypatch):
    nan_d_loss_from(monkeypatch, bad_call=7)  # NaN from step 7 on, whatever the rate
    events = []
    c = cfg(steps=12, checkpoint_every=4, on_divergence="rollback", max_rollbacks=2)
    with pytest.raises(TrainingDiverged):
        train(c, tmp_path, TrainHooks(on_rollback=events.append), dataset=shapes16)
    assert [e.attempt for e in events] == [1, 2] and events[-1].lr_scale == 0.25


def test_a_rollback_halves_the_scheduled_rates(tmp_path, shapes16, monkeypatch):
    nan_d_loss_from(monkeypatch, bad_call=7, once=True)
    c = cfg(steps=12, checkpoint_every=4, on_divergence="rollback", lr_schedule="linear")
    result = train(c, tmp_path, dataset=shapes16)
    assert result.status == "succeeded" and read_meta(result.checkpoint)["rollbacks"] == 1
    assert lr_of(result.checkpoint, "opt_g") == pytest.approx(c.g_lr * c.lr_factor(11) / 2)
