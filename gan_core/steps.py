"""One training step, in its two phases: discriminator updates, then a generator update.

The loop in gan_core.training only calls a ``GANStep``, as stylegan2-ada's loop only calls
its loss object; everything that decides *how* a step trains (loss, gradient penalty,
augmentation (fixed or adaptive p), R1/R2, autocast, gradient scaling, EMA) lives here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from gan_core.augment import augment
from gan_core.config import TrainConfig
from gan_core.data import Batcher
from gan_core.distributed import RankRandom
from gan_core.losses import get_loss, gradient_penalty, zero_centred_penalty
from gan_core.state import TrainState

__all__ = ["GANStep", "autocast"]


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision as the config asks: bf16 on CUDA or CPU, fp16 on CUDA only (fp16 on a
    CPU, which ``device: auto`` can land on, trains in fp32)."""
    if config.precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if config.precision == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class GANStep:
    """``step()`` runs d_steps discriminator updates and one generator update.

    Returns the detached (2,) tensor [d_loss, g_loss] of the step, left on the device so that
    the caller decides when to synchronise.
    """

    def __init__(self, state: TrainState, batcher: Batcher):
        self.state, self.batcher = state, batcher
        config, device = state.config, state.device
        self.config, self.device = config, device
        self.loss = get_loss(config.loss)
        self.ops = config.augment_ops
        # fp16 needs loss scaling; one scaler per optimizer since D may step several times per G step.
        fp16 = device.type == "cuda" and config.precision == "fp16"
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.channels_last = state.channels_last
        # data parallel: this rank's slice of each global draw, its own augmentation draws
        self.dist = state.dist
        if self.dist is not None:
            self.part = self.dist.shard(config.batch_size)
            self.random: RankRandom | None = RankRandom(config.seed, self.dist.rank, device)
        else:
            self.random = None

    def _draw(self, tensor: Tensor) -> Tensor:
        """This rank's part of a draw of the global batch (all of it on one process)."""
        return tensor if self.dist is None else tensor[self.part]

    def _reduce(self, module: torch.nn.Module) -> None:
        """Gradients averaged over the ranks, after backward and before the optimizer."""
        if self.dist is not None:
            self.dist.average_gradients(module)

    def d_step(self, keep_graph: bool, update: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """One D update on a real batch and a fresh fake one: (d_loss, real, fake, labels).

        With keep_graph the fake batch keeps G's graph, for the G update that follows.
        ``update`` counts D updates over the whole run, so that lazy R1/R2 falls on the same
        updates whether or not the run was resumed.
        """
        state, config = self.state, self.config
        x, y = self.batcher.next()  # x: (B, C, H, W) in [-1, 1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self._draw(torch.randn(config.batch_size, config.latent_dim, device=self.device))
        gen = self.random.at("d", update) if self.random is not None else None
        # conditional: fakes take the real batch's labels, so D compares like with like
        with autocast(config, self.device):
            with torch.set_grad_enabled(keep_graph):
                fake = state.G(z, y)
            p = state.augment_p  # only D sees augmented images, reals and fakes alike
            real_logits = state.D(augment(x, self.ops, p, gen), y)
            fake_logits = state.D(augment(fake.detach(), self.ops, p, gen), y)
            d_loss = self.loss.d_loss(real_logits, fake_logits)
        if state.ada is not None:  # adaptive p follows D's verdicts on the reals it trains on
            state.ada.observe(self.loss.realness(real_logits, fake_logits))
        # penalties in fp32, outside autocast: they differentiate through D's input gradient
        if self.loss.needs_gradient_penalty and config.gp_weight > 0:
            alpha = None
            if self.dist is not None:  # drawn for the global batch, as one process would
                shape = (config.batch_size, *([1] * (x.dim() - 1)))
                alpha = self._draw(torch.rand(shape, device=x.device, dtype=x.dtype))
            d_loss = d_loss + config.gp_weight * gradient_penalty(
                state.D, x, fake.detach().float(), y, alpha
            )
        if (config.r1_gamma or config.r2_gamma) and update % config.reg_every == 0:
            # lazy regularisation: every reg_every-th update, weighted by reg_every
            k = config.reg_every
            if config.r1_gamma:
                d_loss = d_loss + (config.r1_gamma / 2 * k) * zero_centred_penalty(state.D, x, y)
            if config.r2_gamma:
                d_loss = d_loss + (config.r2_gamma / 2 * k) * zero_centred_penalty(
                    state.D, fake.detach().float(), y
                )
        state.opt_d.zero_grad(set_to_none=True)
        self.d_scaler.scale(d_loss).backward()
        self._reduce(state.D)
        self.d_scaler.step(state.opt_d)
        self.d_scaler.update()
        return d_loss, x, fake, y

    def g_step(self, real: Tensor, fake: Tensor, y: Tensor | None) -> Tensor:
        """One G update through D's judgement of ``fake`` (which carries G's graph); a
        relativistic loss also sees D's logits on ``real``, a constant for G."""
        state = self.state
        gen = self.random.at("g", state.step) if self.random is not None else None
        with autocast(self.config, self.device):
            real_logits = None
            if self.loss.needs_real_for_g:
                with torch.no_grad():
                    real_logits = state.D(augment(real, self.ops, state.augment_p, gen), y)
            fake_logits = state.D(augment(fake, self.ops, state.augment_p, gen), y)
            g_loss = self.loss.g_loss(fake_logits, real_logits)
        state.opt_g.zero_grad(set_to_none=True)
        self.g_scaler.scale(g_loss).backward()
        self._reduce(state.G)
        self.g_scaler.step(state.opt_g)
        self.g_scaler.update()
        return g_loss

    def step(self) -> Tensor:
        """d_steps D updates (the last real and fake batches are reused for G's), one G update,
        EMA; the rates first follow the lr schedule, if any."""
        n, state = self.config.d_steps, self.state
        if self.config.lr_schedule != "constant":
            state.set_learning_rates()
        for i in range(n):
            d_loss, real, fake, y = self.d_step(keep_graph=i == n - 1, update=state.step * n + i)
        g_loss = self.g_step(real, fake, y)
        state.step += 1
        if state.ema is not None:
            state.ema.update(state.G, state.step)
        return torch.stack([d_loss.detach(), g_loss.detach()])
