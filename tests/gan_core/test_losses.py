"""Loss values on known logits, the loss registry, and the gradient penalties (WGAN-GP, R1/R2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gan_core.losses import GANLoss, get_loss, gradient_penalty, zero_centred_penalty

NAMES = ["bce", "hinge", "wgan-gp", "lsgan", "rpgan"]


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


@pytest.mark.parametrize("name", NAMES)
def test_get_loss_returns_named_loss(name):
    loss = get_loss(name)
    assert isinstance(loss, GANLoss) and loss.name == name
    assert loss.needs_gradient_penalty == (name == "wgan-gp")
    assert loss.needs_real_for_g == (name == "rpgan")


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="hinge") as info:
        get_loss("wasserstein")
    assert "wasserstein" in str(info.value) and "lsgan" in str(info.value)


def test_bce_at_zero_logits():
    loss = get_loss("bce")
    zeros = torch.zeros(4)
    assert loss.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert loss.g_loss(zeros).item() == pytest.approx(math.log(2))


def test_bce_matches_binary_cross_entropy_and_is_stable():
    loss = get_loss("bce")
    real, fake = t(3.0, -1.0, 0.5), t(-2.0, 0.0, 4.0)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(3)) + bce(fake, torch.zeros(3))
    assert loss.d_loss(real, fake).item() == pytest.approx(expected.item())
    assert loss.g_loss(fake).item() == pytest.approx(bce(fake, torch.ones(3)).item())
    # Large logits: a sigmoid-then-log form would give inf here.
    assert torch.isfinite(loss.d_loss(t(-200.0), t(200.0)))
    assert loss.d_loss(t(-200.0), t(200.0)).item() == pytest.approx(400.0)


def test_hinge_values():
    loss = get_loss("hinge")
    assert loss.d_loss(t(2.0, 2.0), t(-2.0, -2.0)).item() == 0.0
    assert loss.d_loss(t(0.0), t(0.0)).item() == pytest.approx(2.0)
    assert loss.g_loss(t(1.0, 3.0)).item() == pytest.approx(-2.0)


def test_wgan_values():
    loss = get_loss("wgan-gp")
    assert loss.d_loss(t(3.0, 1.0), t(-1.0, 0.0)).item() == pytest.approx(-0.5 - 2.0)
    assert loss.g_loss(t(1.0, 3.0)).item() == pytest.approx(-2.0)


def test_lsgan_values():
    loss = get_loss("lsgan")
    assert loss.d_loss(t(1.0, 1.0), t(0.0, 0.0)).item() == 0.0
    assert loss.g_loss(t(1.0, 1.0)).item() == 0.0
    assert loss.d_loss(t(0.0), t(1.0)).item() == pytest.approx(1.0)
    assert loss.g_loss(t(0.0)).item() == pytest.approx(0.5)


def test_rpgan_values():
    loss = get_loss("rpgan")
    # D: softplus(fake - real); G: softplus(real - fake), per pair
    assert loss.d_loss(t(2.0, 0.0), t(0.0, 0.0)).item() == pytest.approx(
        (math.log1p(math.exp(-2.0)) + math.log(2)) / 2
    )
    assert loss.g_loss(t(0.0), t(2.0)).item() == pytest.approx(math.log1p(math.exp(2.0)))
    assert loss.d_loss(t(1.5), t(1.5)).item() == pytest.approx(math.log(2))
    # relativistic: shifting both logits by the same amount changes nothing
    assert loss.d_loss(t(7.0), t(5.0)).item() == pytest.approx(loss.d_loss(t(2.0), t(0.0)).item())
    with pytest.raises(ValueError, match="real"):
        loss.g_loss(t(0.0))


@pytest.mark.parametrize("name", NAMES)
def test_losses_are_float32_scalars_from_low_precision_logits(name):
    loss = get_loss(name)
    real = torch.randn(8).to(torch.bfloat16).requires_grad_(True)
    fake = torch.randn(8).to(torch.bfloat16).requires_grad_(True)
    d, g = loss.d_loss(real, fake), loss.g_loss(fake, real.detach())
    assert d.dtype == torch.float32 and d.shape == ()
    assert g.dtype == torch.float32 and g.shape == ()
    (d + g).backward()
    assert real.grad is not None and fake.grad is not None


@pytest.mark.parametrize("name", NAMES)
def test_d_loss_prefers_correct_discriminator(name):
    """A D that scores real high and fake low has lower loss than the reverse."""
    loss = get_loss(name)
    good = loss.d_loss(t(0.9, 0.8), t(0.1, 0.2))
    bad = loss.d_loss(t(0.1, 0.2), t(0.9, 0.8))
    assert good < bad
    assert loss.g_loss(t(0.9), t(0.5)) < loss.g_loss(t(0.1), t(0.5))


class LinearCritic(nn.Module):
    """D(x) = <w, x> for a fixed w; its input gradient is w for every sample."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (x.flatten(1) * self.w.flatten()).sum(1)


def test_gradient_penalty_zero_for_unit_norm_gradient():
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    D = LinearCritic(w / w.norm())
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    assert gradient_penalty(D, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_positive_otherwise_and_backprops_into_d():
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    D = LinearCritic(3.0 * w / w.norm())
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4, requires_grad=True)
    gp = gradient_penalty(D, real, fake)
    assert gp.item() == pytest.approx(4.0, rel=1e-5)  # (3 - 1)^2
    gp.backward()  # needs create_graph=True: the penalty depends on D's weights via the grad
    assert D.w.grad is not None and D.w.grad.abs().sum() > 0
    assert fake.grad is None  # interpolates are detached from G


def test_gradient_penalty_passes_labels_and_is_seeded():
    seen = []

    def D(x, y=None):
        seen.append(y)
        return (x.flatten(1) ** 2).sum(1)

    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    y = torch.tensor([0, 1])
    torch.manual_seed(1)
    a = gradient_penalty(D, real, fake, y)
    torch.manual_seed(1)
    b = gradient_penalty(D, real, fake, y)
    assert seen[0] is y
    assert a.item() == b.item() and a.item() > 0


def test_zero_centred_penalty_is_the_mean_squared_input_gradient():
    torch.manual_seed(0)
    w = torch.randn(1, 4, 4)
    D = LinearCritic(w.clone())
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    r = zero_centred_penalty(D, x)
    assert r.item() == pytest.approx(w.square().sum().item(), rel=1e-5)  # ||w||^2 per sample
    r.backward()  # the graph is kept: d/dw ||w||^2 = 2w
    assert torch.allclose(D.w.grad, 2 * w, rtol=1e-5)
    assert x.grad is None  # the images are detached: no gradient into G


def test_zero_centred_penalty_is_zero_where_d_is_flat_and_passes_labels():
    seen = []

    def D(x, y=None):
        seen.append(y)
        return (x.flatten(1) ** 2).sum(1)  # gradient 2x: zero at x = 0

    y = torch.tensor([0, 1])
    assert zero_centred_penalty(D, torch.zeros(2, 1, 2, 2), y).item() == 0.0
    ones = zero_centred_penalty(D, torch.ones(2, 1, 2, 2), y).item()
    assert ones == pytest.approx(4 * 4.0)  # 4 pixels, each gradient 2
    assert seen[0] is y
