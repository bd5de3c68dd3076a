"""EMA of the generator: decay warm-up, parameter averaging, buffer copying, standing BN stats."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_core.ema import EMA, standing_batchnorm_stats


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


class _BNGenerator(nn.Module):
    """A stand-in generator whose only layer normalises z: its statistics are z's own."""

    def __init__(self, latent_dim: int = 3, num_classes: int | None = None) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.bn = nn.BatchNorm1d(latent_dim)
        self.labels_seen: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes is not None:
            assert y is not None and y.shape == (z.shape[0],)
            self.labels_seen.append(y)
        return self.bn(z)


def test_standing_stats_are_the_average_over_seeded_batches():
    g = _BNGenerator().eval()
    g.bn.running_mean.fill_(5.0)  # stale statistics, as copied from the raw G
    rng_before = torch.get_rng_state()
    standing_batchnorm_stats(g, batch_size=8, samples=20, seed=3)  # ceil(20 / 8) = 3 batches
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training RNG is untouched
    rng = torch.Generator().manual_seed(3)
    batches = [torch.randn(8, 3, generator=rng) for _ in range(3)]
    torch.testing.assert_close(g.bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(g.bn.running_var, torch.stack([b.var(0) for b in batches]).mean(0))
    assert g.bn.num_batches_tracked.item() == 3
    assert g.bn.momentum == 0.1 and not g.training  # momentum and mode restored


def test_standing_stats_are_deterministic_and_conditional_gets_labels():
    a, b = _BNGenerator(num_classes=4), _BNGenerator(num_classes=4)
    standing_batchnorm_stats(a, batch_size=16, seed=0)
    standing_batchnorm_stats(b, batch_size=16, seed=0)
    assert a.training  # mode restored (train here)
    assert torch.equal(a.bn.running_mean, b.bn.running_mean)
    labels = torch.cat(a.labels_seen)
    assert len(a.labels_seen) == 2048 // 16 and labels.min() >= 0 and labels.max() <= 3
    standing_batchnorm_stats(b, batch_size=16, seed=1)
    assert not torch.equal(a.bn.running_mean, b.bn.running_mean)


def test_standing_stats_without_batchnorm_is_a_no_op():
    g = nn.Linear(3, 3)
    g.latent_dim, g.num_classes = 3, None
    before = [p.clone() for p in g.parameters()]
    standing_batchnorm_stats(g, batch_size=4)
    assert all(torch.equal(a, b) for a, b in zip(before, g.parameters(), strict=True))


def test_saved_ema_generator_has_its_own_batchnorm_stats(tmp_path):
    """The checkpoint's averaged G carries standing statistics of its own weights, not the raw G's."""
    from gan_core.checkpoint import load_generator
    from gan_core.config import TrainConfig
    from gan_core.data import load_dataset
    from gan_core.training import train

    c = TrainConfig(
        image_size=16,
        g_width=8,
        d_width=8,
        latent_dim=16,
        batch_size=8,
        steps=6,
        checkpoint_every=6,
        device="cpu",
        # exact equality below: in bf16 on a CPU with native bf16 the nets are channels_last,
        # where the statistics' sums round differently from this NCHW recomputation
        precision="fp32",
    )
    result = train(c, tmp_path, dataset=load_dataset("shapes", image_size=16, max_items=64))
    ema_g, raw_g = load_generator(result.checkpoint), load_generator(result.checkpoint, ema=False)
    expected = load_generator(result.checkpoint)
    standing_batchnorm_stats(expected, batch_size=c.batch_size, seed=c.seed)
    for name, buf in expected.named_buffers():
        assert torch.equal(dict(ema_g.named_buffers())[name], buf), name
    bn = "net.1.running_mean"  # the first BatchNorm: differs from the raw G's copy
    assert not torch.equal(dict(ema_g.named_buffers())[bn], dict(raw_g.named_buffers())[bn])


def test_a_checkpoints_seconds_include_the_standing_statistics(tmp_path, monkeypatch):
    """The checkpoint's ``seconds`` (the write-seconds metric, and what wallclock.py takes
    out of training time) are the whole pause in training, the EMA G's standing statistics
    included: at 64 px they cost more than the write."""
    import time

    import gan_core.state
    from gan_core.config import TrainConfig
    from gan_core.data import load_dataset
    from gan_core.training import TrainHooks, train

    def slow_stats(*args, **kwargs):
        time.sleep(0.5)
        return standing_batchnorm_stats(*args, **kwargs)

    monkeypatch.setattr(gan_core.state, "standing_batchnorm_stats", slow_stats)
    c = TrainConfig(
        image_size=16, g_width=8, d_width=8, latent_dim=16, batch_size=8, steps=4,
        checkpoint_every=2, device="cpu", precision="fp32",
    )  # fmt: skip
    seen: list[float] = []
    hooks = TrainHooks(on_checkpoint=lambda info: seen.append(info.seconds))
    train(c, tmp_path, hooks, dataset=load_dataset("shapes", image_size=16, max_items=64))
    assert len(seen) == 2 and all(s >= 0.5 for s in seen), seen
