"""Augmentation probability (fixed and adaptive, StyleGAN2-ADA) and the geometric ops."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from gan_core.augment import AUGMENTATIONS, AdaptiveP, augment, diff_augment
from gan_core.config import TrainConfig
from gan_core.config_augment import ADAPTIVE_DEFAULT_OPS
from gan_core.data import load_dataset
from gan_core.losses import get_loss
from gan_core.training import Progress, TrainHooks, train
from tests.tiny import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 8, c: int = 3, side: int = 12) -> torch.Tensor:
    return torch.rand(n, c, side, side) * 2 - 1


# --------------------------------------------------------------------------- the new ops


@pytest.mark.parametrize("op", ["flip", "rot90"])
@pytest.mark.parametrize("channels", [1, 3])
def test_geometric_ops_keep_shape_and_are_seeded(op, channels):
    torch.manual_seed(0)
    x = images(c=channels)
    torch.manual_seed(3)
    a = diff_augment(x, (op,))
    torch.manual_seed(3)
    b = diff_augment(x, (op,))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    outs = set()
    for seed in range(8):  # another seed, other choices
        torch.manual_seed(seed)
        outs.add(repr(diff_augment(x, (op,)).flatten().tolist()))
    assert len(outs) > 1


@pytest.mark.parametrize("op", ["flip", "rot90"])
def test_geometric_ops_are_differentiable(op):
    torch.manual_seed(0)
    x = images().requires_grad_(True)
    weights = torch.arange(x.numel(), dtype=torch.float32).view_as(x)
    (diff_augment(x, (op,)) * weights).sum().backward()
    # a permutation of pixels: each input pixel gets exactly one output pixel's weight
    assert x.grad is not None
    assert torch.equal(x.grad.flatten().sort().values, weights.flatten().sort().values.float())


def test_flip_mirrors_left_right_or_keeps_each_sample():
    torch.manual_seed(0)
    x = images(n=64)
    out = diff_augment(x, ("flip",))
    mirrored = [torch.equal(out[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 16 < sum(mirrored) < 48  # probability 1/2 each


def test_rot90_turns_each_sample_by_a_multiple_of_90_degrees():
    torch.manual_seed(0)
    x = images(n=64)
    out = diff_augment(x, ("rot90",))
    turns = []
    for i in range(64):
        (k,) = [k for k in range(4) if torch.equal(out[i], torch.rot90(x[i], k, dims=(1, 2)))]
        turns.append(k)
    assert set(turns) == {0, 1, 2, 3}


def test_translation_moves_whole_pixels():
    """Integer translation: every output pixel is an input pixel of the same channel, or 0."""
    torch.manual_seed(0)
    x = images(n=16, c=3)
    out = diff_augment(x, ("translation",))
    for i in range(16):
        for c in range(3):
            values = set(x[i, c].flatten().tolist()) | {0.0}
            assert set(out[i, c].flatten().tolist()) <= values


# --------------------------------------------------------------------------- probability


def test_p_one_is_the_old_diffaugment_bit_for_bit():
    """p = 1 (the default) runs exactly the code path there was before p: each op in turn on
    the whole batch, with no draw of its own."""
    ops = ("color", "translation", "cutout")
    x = images(n=16)
    torch.manual_seed(11)
    old = x
    for name in ops:  # the old diff_augment's loop
        old = AUGMENTATIONS[name](old)
    after_old = torch.rand(1)
    torch.manual_seed(11)
    new = augment(x, ops, 1.0)
    assert torch.equal(new, old)
    assert torch.equal(torch.rand(1), after_old)  # the RNG stream is where it was, too


def test_p_zero_applies_and_draws_nothing():
    x = images()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    assert augment(x, ("color", "flip", "rot90"), 0.0) is x
    assert torch.equal(torch.get_rng_state(), before)
    # an adaptive p still at 0 (a tensor: it is not looked at on the host) changes nothing
    assert torch.equal(augment(x, ("color", "flip", "rot90"), torch.zeros(())), x)


def test_fixed_p_applies_each_op_to_some_samples():
    torch.manual_seed(0)
    x = images(n=200)
    out = augment(x, ("color",), 0.3)
    changed = sum(not torch.equal(out[i], x[i]) for i in range(200))
    assert 30 < changed < 90  # about 60


# --------------------------------------------------------------------------- AdaptiveP


def ada(**kw) -> AdaptiveP:
    args = {"target": 0.6, "interval": 2, "kimg": 1.0, "batch_size": 10, "device": "cpu"}
    return AdaptiveP(**(args | kw))  # type: ignore[arg-type]


def test_adaptive_p_moves_per_interval_towards_the_target():
    a = ada()  # speed: 10 * 2 / 1000 = 0.02 per interval
    sure = torch.ones(10)  # D calls every real real: r_t = 1 > 0.6
    a.observe(sure)
    assert float(a.p) == 0.0  # mid-interval: not yet
    a.observe(sure)
    assert float(a.p) == pytest.approx(0.02)
    for _ in range(4):
        a.observe(sure)
    assert float(a.p) == pytest.approx(0.06)
    doubt = torch.tensor([1.0] * 5 + [-1.0] * 5)  # r_t = 0 < 0.6
    for _ in range(2):
        a.observe(doubt)
    assert float(a.p) == pytest.approx(0.04)
    for _ in range(20):
        a.observe(-sure)
    assert float(a.p) == 0.0  # clamped
    for _ in range(200):
        a.observe(sure)
    assert float(a.p) == 1.0


def test_adaptive_state_round_trips_mid_interval():
    a, b = ada(interval=3), ada(interval=3)
    mixed = torch.tensor([1.0] * 9 + [-1.0])
    for logits in (torch.ones(10), torch.ones(10), torch.ones(10), mixed):
        a.observe(logits)
    b.load_state_dict(a.state_dict())
    last = torch.ones(10)
    for x in (a, b):
        x.observe(last)
        x.observe(last)
    assert float(a.p) == float(b.p) > 0
    assert a.updates == b.updates == 0


@pytest.mark.parametrize("name", ["rpgan", "wgan-gp"])
def test_a_shift_invariant_loss_judges_each_real_against_its_fake(name):
    """Under rpgan or wgan-gp D's scores have no zero (the losses see differences only), so
    sign(D(real)) says nothing: r_t compares each real with the fake it is paired with."""
    loss = get_loss(name)
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.0, -3.0])
    assert torch.equal(loss.realness(real + 7, fake + 7), loss.realness(real, fake))
    assert torch.equal(loss.realness(real, fake).sign(), torch.tensor([1.0, -1.0, 1.0]))
    assert torch.equal(get_loss("hinge").realness(real, fake), real)  # ADA's sign(D(real))
    assert torch.equal(get_loss("lsgan").realness(real, fake).sign(), real.sub(0.5).sign())


# --------------------------------------------------------------------------- real runs

# A D that can memorise 16 images: no penalty, two D updates per G step, a fast speed so p
# can move within 200 steps (the default ada_kimg is 100).
OVERFIT = tiny(
    device="cpu",
    precision="fp32",
    d_width=16,
    d_steps=2,
    steps=200,
    checkpoint_every=1000,
    augment_p="adaptive",
    ada_kimg=0.5,
)


def p_series(tmp_path, n_images: int) -> list[tuple[int, float]]:
    data = load_dataset("shapes", image_size=16, max_items=n_images)
    seen: list[Progress] = []
    hooks = TrainHooks(on_progress=seen.append, progress_interval=0)  # every step
    train(TrainConfig(**OVERFIT), tmp_path, hooks, dataset=data)
    assert all(p.augment_p is not None for p in seen)
    return [(p.step, float(p.augment_p or 0)) for p in seen]


def late_mean(series: list[tuple[int, float]]) -> float:
    """The mean p over the last 80 steps, after the first rise while D beats a new G."""
    late = [p for step, p in series if step > 120]
    return sum(late) / len(late)


def test_adaptive_p_rises_when_d_overfits_a_tiny_dataset(tmp_path):
    series = p_series(tmp_path, 16)
    assert series[0] == (1, 0.0)  # it starts at 0
    # measured: about 0.14, against about 0.006 on 4,096 images (the next test)
    assert late_mean(series) > 0.08, series


def test_adaptive_p_returns_to_zero_on_a_large_dataset(tmp_path):
    """4,096 images: p rises while D beats an untrained G, then falls back to 0 and stays
    there once G catches up, as D does not overfit."""
    series = p_series(tmp_path, 4096)
    assert max(p for _, p in series) > 0.1  # it did move (so staying at 0 is a verdict)
    assert late_mean(series) < 0.02, series


def test_progress_reports_p(tmp_path):
    data = load_dataset("shapes", image_size=16, max_items=64)
    for name, extra, want in (
        ("none", {}, None),
        ("fixed", {"augment": "flip", "augment_p": 0.25}, 0.25),
        ("dflt", {"augment": "flip"}, 1.0),
    ):
        seen: list[Progress] = []
        hooks = TrainHooks(on_progress=seen.append, progress_interval=0)
        train(
            TrainConfig(**tiny(device="cpu", steps=2, **extra)),
            tmp_path / name,
            hooks,
            dataset=data,
        )
        assert [p.augment_p for p in seen] == [want, want]


# --------------------------------------------------------------------------- config


def test_adaptive_without_ops_gets_the_documented_default_set():
    c = TrainConfig(augment_p="adaptive")
    assert c.augment == ADAPTIVE_DEFAULT_OPS == "translation,flip,color"
    assert TrainConfig(augment_p="adaptive", augment="rot90").augment == "rot90"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"augment_p": 1.5, "augment": "flip"}, "augment_p"),
        ({"augment_p": -0.1, "augment": "flip"}, "augment_p"),
        ({"augment_p": True, "augment": "flip"}, "augment_p"),
        ({"augment_p": "sometimes", "augment": "flip"}, "augment_p"),
        ({"augment_p": 0.5}, "augment_p"),  # no ops to apply
        ({"augment_p": "adaptive", "augment": "off"}, "augment"),
        ({"ada_target": 0.7}, "ada_target"),  # not adaptive
        ({"augment_p": "adaptive", "ada_kimg": 0}, "ada_kimg"),
        ({"augment_p": "adaptive", "ada_interval": 0}, "ada_interval"),
        ({"augment": "flip,spin"}, "augment"),
    ],
)
def test_refusals_name_the_field(fields, field):
    with pytest.raises(ValidationError) as info:
        TrainConfig(**fields)
    (err,) = info.value.errors()
    named = err["loc"][0] if err["loc"] else str(err["msg"]).removeprefix("Value error, ")
    assert str(named).startswith(field), err
