"""One training step of a translation run, behind the interface the loop calls: ``step()``
returns the detached (2,) tensor [d_loss, g_loss] on the device.

- ``PairedStep`` (pix2pix, Isola et al. 2017): D_b judges (A, B) pairs against (A, G(A));
  G's loss is the adversarial one plus lambda_l1 * |G(A) - B|.
- ``UnpairedStep`` (CycleGAN, Zhu et al. 2017): G_ab and G_ba are updated together on the
  adversarial losses through D_b and D_a, the cycle losses lambda_cycle * |G_ba(G_ab(a)) - a|
  (and the B side's) and, with equal channels, the identity losses lambda_identity *
  lambda_cycle * |G_ab(b) - b| (and A's); then each D on real images against generated ones
  drawn through its image pool.

D's loss is the mean of its real and fake terms, as in both papers' code (the LSGAN loss
already halves each term; BCE and hinge sum them, so they are halved here).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.nn import functional as F

from gan_core.losses import get_loss
from gan_core.steps import autocast
from gan_core.translation.config import PairedConfig, UnpairedConfig
from gan_core.translation.state import PairBatcher, TranslationState

__all__ = ["PairedStep", "UnpairedStep", "translation_step"]

_SUMMED_D_TERMS = ("bce", "hinge")  # losses whose d_loss adds the real and fake terms


class _TranslationStep(ABC):
    """What both kinds' steps share: the loss, D's halving, fp16 scaling, an update, and the
    step's end (count, EMA, the losses); ``step()`` is each kind's D and G phases."""

    def __init__(self, state: TranslationState, batcher: PairBatcher) -> None:
        self.state, self.batcher = state, batcher
        self.config, self.device = state.config, state.device
        self.loss = get_loss(self.config.loss)
        self.d_scale = 0.5 if self.config.loss in _SUMMED_D_TERMS else 1.0
        fp16 = self.device.type == "cuda" and self.config.precision == "fp16"
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def _batch(self) -> tuple[Tensor, Tensor]:
        a, b = self.batcher.next()
        if self.state.channels_last:
            a = a.contiguous(memory_format=torch.channels_last)
            b = b.contiguous(memory_format=torch.channels_last)
        return a, b

    def _update(self, which: str, loss: Tensor) -> None:
        opt = self.state.opt_d if which == "d" else self.state.opt_g
        scaler = self.d_scaler if which == "d" else self.g_scaler
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def _d_requires_grad(self, flag: bool) -> None:
        for d in self.state.discriminators.values():
            d.requires_grad_(flag)

    def _finish(self, d_loss: Tensor, g_loss: Tensor) -> Tensor:
        state = self.state
        state.step += 1
        state.update_ema()
        return torch.stack([d_loss.detach().float(), g_loss.detach().float()])

    @abstractmethod
    def step(self) -> Tensor:
        """One step of this kind: [d_loss, g_loss], detached, on the device."""


class PairedStep(_TranslationStep):
    config: PairedConfig

    def step(self) -> Tensor:
        state, config = self.state, self.config
        if config.lr_schedule != "constant":
            state.set_learning_rates()
        G, D = state.generators["G_ab"], state.discriminators["D_b"]
        a, b = self._batch()
        with autocast(config, self.device):  # type: ignore[arg-type]
            fake = G(a)
            d_loss = self.d_scale * self.loss.d_loss(D(b, a), D(fake.detach(), a))
        self._update("d", d_loss)
        self._d_requires_grad(False)  # G's backward needs no gradients of D's weights
        with autocast(config, self.device):  # type: ignore[arg-type]
            adversarial = self.loss.g_loss(D(fake, a))
        l1 = F.l1_loss(fake.float(), b)
        g_loss = adversarial + config.lambda_l1 * l1
        self._update("g", g_loss)
        self._d_requires_grad(True)
        return self._finish(d_loss, g_loss)


class UnpairedStep(_TranslationStep):
    config: UnpairedConfig

    def step(self) -> Tensor:
        state, config = self.state, self.config
        if config.lr_schedule != "constant":
            state.set_learning_rates()
        G_ab, G_ba = state.generators["G_ab"], state.generators["G_ba"]
        D_a, D_b = state.discriminators["D_a"], state.discriminators["D_b"]
        a, b = self._batch()
        lam = config.lambda_cycle
        self._d_requires_grad(False)
        with autocast(config, self.device):  # type: ignore[arg-type]
            fake_b, fake_a = G_ab(a), G_ba(b)
            adversarial = self.loss.g_loss(D_b(fake_b)) + self.loss.g_loss(D_a(fake_a))
            rec_a, rec_b = G_ba(fake_b), G_ab(fake_a)
        g_loss = adversarial + lam * (F.l1_loss(rec_a.float(), a) + F.l1_loss(rec_b.float(), b))
        if config.lambda_identity:  # resolved: never None here
            with autocast(config, self.device):  # type: ignore[arg-type]
                same_b, same_a = G_ab(b), G_ba(a)
            g_loss = g_loss + lam * config.lambda_identity * (
                F.l1_loss(same_b.float(), b) + F.l1_loss(same_a.float(), a)
            )
        self._update("g", g_loss)
        self._d_requires_grad(True)
        pool_a, pool_b = state.pools["pool_a"], state.pools["pool_b"]
        with autocast(config, self.device):  # type: ignore[arg-type]
            d_b = self.loss.d_loss(D_b(b), D_b(pool_b.query(fake_b.detach())))
            d_a = self.loss.d_loss(D_a(a), D_a(pool_a.query(fake_a.detach())))
            d_loss = self.d_scale * (d_a + d_b)
        self._update("d", d_loss)
        return self._finish(d_loss, g_loss)


def translation_step(state: TranslationState, batcher: PairBatcher) -> _TranslationStep:
    return (PairedStep if state.config.kind == "paired" else UnpairedStep)(state, batcher)
