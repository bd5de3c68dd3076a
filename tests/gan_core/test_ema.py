"""EMA of the generator: decay warm-up, parameter averaging, buffer copying."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_core.ema import EMA


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_copy_is_frozen_eval_and_independent():
    net = small_net()
    ema = EMA(net, 0.999, 0.05)
    assert ema.model is not net and not ema.model.training
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in net.parameters())
    for a, b in zip(ema.model.parameters(), net.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_decay_ramps_up_and_is_capped():
    ema = EMA(small_net(), 0.999, 0.05)
    early, mid, late = ema.decay_at(1), ema.decay_at(3000), ema.decay_at(1_000_000)
    assert early < 1e-5  # half-life 0.05 steps: tracks the raw G almost exactly
    assert mid == pytest.approx(0.5 ** (1 / 150))  # half-life 0.05 * 3000 = 150 steps
    assert early < mid < late
    assert late == 0.999
    decays = [ema.decay_at(s) for s in range(1, 20_000, 500)]
    assert decays == sorted(decays) and max(decays) == 0.999


def test_decay_without_rampup_is_fixed():
    ema = EMA(small_net(), 0.99, None)
    assert ema.decay_at(1) == ema.decay_at(10_000) == 0.99


def test_invalid_arguments():
    with pytest.raises(ValueError):
        EMA(small_net(), 1.0, None)
    with pytest.raises(ValueError):
        EMA(small_net(), 0.9, 0.0)


def test_update_moves_parameters_toward_model():
    torch.manual_seed(0)
    net = small_net()
    ema = EMA(net, 0.9, None)
    start = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, step=1)
    for avg, s in zip(ema.model.parameters(), start, strict=True):
        torch.testing.assert_close(avg, s + 0.1)  # 0.9 * old + 0.1 * (old + 1)


def test_early_update_nearly_copies_with_rampup():
    torch.manual_seed(0)
    net = small_net()
    ema = EMA(net, 0.999, 0.05)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0).add_(1.0)
    ema.update(net, step=1)
    for avg, cur in zip(ema.model.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(avg, cur)


def test_buffers_are_copied():
    torch.manual_seed(0)
    net = small_net()
    ema = EMA(net, 0.999, None)
    net.train()
    net(torch.randn(8, 3) * 5 + 2)  # updates BatchNorm running stats
    ema.update(net, step=1)
    bn_avg, bn = ema.model[1], net[1]
    assert torch.equal(bn_avg.running_mean, bn.running_mean)
    assert torch.equal(bn_avg.running_var, bn.running_var)
    assert bn_avg.num_batches_tracked.item() == 1
    # The parameters, by contrast, are averaged (unchanged here: net's did not move).
    assert torch.equal(ema.model[0].weight, net[0].weight)
