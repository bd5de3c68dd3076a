"""GAN objectives on raw discriminator logits, and the gradient penalties: WGAN-GP's and the
zero-centred R1/R2.

The source document applied a Wasserstein-style loss (mean of D's outputs) to a
discriminator ending in a sigmoid, which is a bug: it is neither the minimax objective
nor a valid critic. 'bce' here is the correct non-saturating form of the minimax
objective, written with softplus on logits (log sigmoid without overflow).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GANLoss", "LOSSES", "get_loss", "gradient_penalty", "zero_centred_penalty"]


class GANLoss(ABC):
    """A discriminator and a generator loss, each a float32 scalar from (N,) logits."""

    name: str = ""
    needs_gradient_penalty: bool = False
    # a relativistic loss judges fakes against reals: G's loss needs D's logits on a real batch
    needs_real_for_g: bool = False

    @abstractmethod
    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor: ...

    @abstractmethod
    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor: ...

    def realness(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Per real sample, D's verdict measured from its decision boundary: positive when D
        calls it real. Adaptive augmentation averages its sign (ADA's r_t = E[sign(D(real))],
        for a logistic D whose boundary is 0)."""
        return real_logits


class BCELoss(GANLoss):
    """Non-saturating GAN (Goodfellow et al. 2014): -log D(x) - log(1 - D(G(z))); G: -log D(G(z))."""

    name = "bce"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        # softplus(-l) = -log sigmoid(l); softplus(l) = -log(1 - sigmoid(l)).
        return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return F.softplus(-fake_logits.float()).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; SAGAN/BigGAN): D: relu(1 - real) + relu(1 + fake); G: -fake."""

    name = "hinge"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return -fake_logits.float().mean()


class WGANGPLoss(GANLoss):
    """Wasserstein critic loss (Gulrajani et al. 2017); pair with gradient_penalty."""

    name = "wgan-gp"
    needs_gradient_penalty = True

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.float().mean() - real_logits.float().mean()

    def realness(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        # a critic's scores have no zero: only a real's score against a fake's means anything
        return real_logits - fake_logits

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return -fake_logits.float().mean()


class LSGANLoss(GANLoss):
    """Least squares GAN (Mao et al. 2017): D targets real 1, fake 0; G targets 1."""

    name = "lsgan"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        real, fake = real_logits.float(), fake_logits.float()
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()

    def realness(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return real_logits - 0.5  # halfway between the targets

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return 0.5 * ((fake_logits.float() - 1.0) ** 2).mean()


class RpGANLoss(GANLoss):
    """Relativistic pairing GAN (Jolicoeur-Martineau 2018; R3GAN, Huang et al. 2024): D is
    trained to score each real above the fake it is paired with, softplus(D(fake) - D(real));
    G the reverse, softplus(D(real) - D(fake)). R3GAN pairs it with R1 + R2 penalties
    (``r1_gamma``, ``r2_gamma``), without which it is not shown to converge."""

    name = "rpgan"
    needs_real_for_g = True

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(fake_logits.float() - real_logits.float()).mean()

    def realness(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        # D(real) alone drifts by any constant (the loss sees differences only): judge each
        # real against the fake it is paired with, as the loss does
        return real_logits - fake_logits

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        if real_logits is None:
            raise ValueError("rpgan: the generator loss needs D's logits on a real batch")
        return F.softplus(real_logits.float() - fake_logits.float()).mean()


LOSSES: dict[str, type[GANLoss]] = {
    cls.name: cls for cls in (BCELoss, HingeLoss, WGANGPLoss, LSGANLoss, RpGANLoss)
}


def get_loss(name: str) -> GANLoss:
    """The loss called name: one of 'bce', 'hinge', 'wgan-gp', 'lsgan', 'rpgan'."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {list(LOSSES)}") from None


def gradient_penalty(
    D: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    y: Tensor | None = None,
    alpha: Tensor | None = None,
) -> Tensor:
    """WGAN-GP penalty: mean of (||grad_x D(x)||_2 - 1)^2 at random real/fake interpolates.

    D must not use batch-dependent layers (BatchNorm): the penalty is per sample.
    create_graph=True so the penalty itself can be backpropagated into D. ``alpha`` (N, 1, 1, 1):
    the interpolation weights, drawn here from the global RNG when None.
    """
    n = real.shape[0]
    if alpha is None:
        alpha = torch.rand(n, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)  # (N, C, H, W)
    out = D(x) if y is None else D(x, y)  # (N,)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)  # (N,)
    return ((norms - 1.0) ** 2).mean()


def zero_centred_penalty(D: Callable[..., Tensor], x: Tensor, y: Tensor | None = None) -> Tensor:
    """R1 (x real) or R2 (x fake) of Mescheder et al. 2018: mean over the batch of
    ||grad_x D(x)||^2, pushing D's gradient towards zero on the data (not towards norm 1
    as WGAN-GP does). The caller weights it by gamma / 2.

    As with gradient_penalty, D must be free of BatchNorm and the graph is kept so the
    penalty trains D.
    """
    x = x.detach().requires_grad_(True)  # (N, C, H, W)
    out = D(x) if y is None else D(x, y)  # (N,)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    return grad.float().flatten(1).square().sum(1).mean()
