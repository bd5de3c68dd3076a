"""One training step's regularisers: R1/R2 reach D's loss with the weight they say, and lazy
regularisation (reg_every) applies them only on its updates; rpgan's G sees real logits."""

from __future__ import annotations

import pytest
import torch

from gan_core.config import TrainConfig
from gan_core.data import Batcher, load_dataset
from gan_core.losses import zero_centred_penalty
from gan_core.state import TrainState
from gan_core.steps import GANStep
from gan_core.training import resolve_config
from tests.tiny import tiny

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def shapes16():
    return load_dataset("shapes", image_size=16, max_items=64)


def fresh_step(shapes16, **kw) -> GANStep:
    """A GANStep on a freshly seeded state and batcher: two calls give identical starts."""
    config = resolve_config(TrainConfig(**tiny(device="cpu", **kw)), shapes16)
    state = TrainState(config, CPU)
    return GANStep(state, Batcher(shapes16, config.batch_size, seed=config.seed, device=CPU))


def d_loss_at(step: GANStep, update: int) -> float:
    torch.manual_seed(123)  # the same latents for every call
    d_loss, _, _, _ = step.d_step(keep_graph=False, update=update)
    return d_loss.item()


def test_r1_r2_are_added_with_gamma_over_two_times_reg_every(shapes16):
    # large gammas: at init D's input gradients are small, and the penalty must stand well
    # clear of float32 rounding in a loss of about 2
    kw = {"loss": "hinge", "r1_gamma": 300.0, "r2_gamma": 500.0, "reg_every": 4}
    off_update = d_loss_at(fresh_step(shapes16, **kw), update=1)  # 1 % 4 != 0: no penalty
    on_update = d_loss_at(fresh_step(shapes16, **kw), update=8)

    # the penalties themselves, on the same untouched D, real batch and fake batch
    probe = fresh_step(shapes16, **kw)
    x, y = probe.batcher.next()
    torch.manual_seed(123)
    z = torch.randn(x.shape[0], probe.config.latent_dim)
    fake = probe.state.G(z, y).detach()
    r1 = zero_centred_penalty(probe.state.D, x, y).item()
    r2 = zero_centred_penalty(probe.state.D, fake, y).item()
    assert r1 > 0 and r2 > 0
    expected = (300.0 / 2 * 4) * r1 + (500.0 / 2 * 4) * r2
    assert on_update - off_update == pytest.approx(expected, rel=1e-3)


def test_no_penalty_without_gamma_and_d_has_no_batchnorm_with_one(shapes16):
    plain = fresh_step(shapes16, loss="hinge")
    assert d_loss_at(plain, 0) == d_loss_at(fresh_step(shapes16, loss="hinge"), 1)
    has_bn = lambda s: any("BatchNorm" in type(m).__name__ for m in s.state.D.modules())  # noqa: E731
    assert has_bn(plain)
    assert not has_bn(fresh_step(shapes16, loss="hinge", r1_gamma=1.0))
    assert not has_bn(fresh_step(shapes16, loss="rpgan", r2_gamma=1.0))


def test_rpgan_generator_loss_uses_the_real_batch(shapes16):
    def after_d_step(real_for_g=None):
        step = fresh_step(shapes16, loss="rpgan", r1_gamma=1.0, r2_gamma=1.0)
        torch.manual_seed(5)
        _, real, fake, y = step.d_step(keep_graph=True, update=0)
        real = real if real_for_g is None else real_for_g
        with torch.no_grad():  # G's loss by hand: softplus(D(real) - D(fake))
            by_hand = torch.nn.functional.softplus(step.state.D(real, y) - step.state.D(fake, y))
        return step.g_step(real, fake, y).item(), by_hand.mean().item()

    g_loss, by_hand = after_d_step()
    assert g_loss == pytest.approx(by_hand, rel=1e-6)
    # another real batch (all white) changes G's loss: the reals are not ignored
    white = torch.ones(8, 1, 16, 16)
    g_white, by_hand_white = after_d_step(white)
    assert g_white == pytest.approx(by_hand_white, rel=1e-6)
    assert abs(g_white - g_loss) > 1e-4
