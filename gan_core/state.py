"""The state of one training run: networks, optimizers, EMA and step; saved and restored whole."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core.augment import AdaptiveP
from gan_core.config import TrainConfig
from gan_core.data import Batcher
from gan_core.distributed import DistContext, group_of
from gan_core.ema import EMA, standing_batchnorm_stats
from gan_core.inference import cpu_has_fast_bf16
from gan_core.nets import build_discriminator, build_generator
from gan_core.sync_batchnorm import convert_batchnorm

__all__ = ["RunState", "TrainState", "uses_channels_last"]


def uses_channels_last(config: Any, device: torch.device) -> bool:
    """Whether the nets and batches are NHWC: on CUDA (markedly faster on tensor cores), and
    in bf16 on a CPU with native bf16 kernels (oneDNN: 1.75x against 1.62x the eager fp32
    loop for NCHW bf16 in benchmarks/train_throughput.py; in fp32 on CPU it gained nothing).
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and config.precision == "bf16" and cpu_has_fast_bf16()


class RunState(ABC):
    """What every kind of run's state shares: the two optimizers, step and rollbacks, the
    learning rates they follow, and the parts of a checkpoint that are the same for every
    kind (optimizers, RNG, batcher, step). A kind names its modules and tensors."""

    config: Any
    device: torch.device
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int
    rollbacks: int

    @abstractmethod
    def _modules(self) -> dict[str, nn.Module]:
        """Every module whose weights the run keeps (for the NaN/Inf check), by name."""

    def augment_probability(self) -> float | None:
        """The augmentation probability now, for progress reports; None without augmentation."""
        return None

    def prepare_checkpoint(self) -> None:
        """What writing a checkpoint changes in the modules, done alone: the ranks of a
        data-parallel run that do not write one run it, so they stay identical to rank 0."""
        return None

    def set_learning_rates(self) -> None:
        """The config's rates times the schedule's factor at this step, halved per rollback."""
        scale = self.config.lr_factor(self.step) * 0.5**self.rollbacks
        for opt, lr in ((self.opt_g, self.config.g_lr), (self.opt_d, self.config.d_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    def non_finite_tensor(self) -> str | None:
        """The name of the first NaN/Inf parameter or buffer of the run's modules, if any."""
        for prefix, module in self._modules().items():
            for name, t in module.state_dict().items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return f"{prefix}.{name}"
        return None

    def _write(
        self,
        run_dir: Path,
        batcher: Any,
        losses: dict[str, float],
        gen: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> ckpt.CheckpointInfo:
        """Write a checkpoint of the kind's tensors (``gen``: what serving needs; ``state``:
        the rest) with the optimizers, RNG and batcher, everything a resume needs."""
        og, og_meta = ckpt.optimizer_to_flat("opt_g", self.opt_g)
        od, od_meta = ckpt.optimizer_to_flat("opt_d", self.opt_d)
        state = {**state, **og, **od, "rng.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        state.update({f"batcher.{k}": v for k, v in batcher.state_dict().items()})
        return ckpt.write_checkpoint(
            run_dir,
            step=self.step,
            config=self.config,
            generator_tensors=gen,
            state_tensors=state,
            meta_extra={
                "epoch": batcher.epoch,
                "optimizers": {"opt_g": og_meta, "opt_d": od_meta},
                "rollbacks": self.rollbacks,
            },
            losses=losses,
        )  # pruning comes after on_checkpoint (see training): records go before files

    def _restore_run(
        self, meta: dict[str, Any], state: dict[str, torch.Tensor], batcher: Any
    ) -> None:
        """The shared part of a restore: optimizers, RNG, batcher, step and rollbacks."""
        opts = meta["optimizers"]
        self.opt_g.load_state_dict(ckpt.optimizer_from_flat("opt_g", state, opts["opt_g"]))
        self.opt_d.load_state_dict(ckpt.optimizer_from_flat("opt_d", state, opts["opt_d"]))
        torch.set_rng_state(state["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in state:
            torch.cuda.set_rng_state(state["rng.cuda"], self.device)
        batcher.load_state_dict(ckpt.sub_state(state, "batcher"))
        self.step = int(meta["step"])
        self.rollbacks = int(meta.get("rollbacks", 0))


class TrainState(RunState):
    """Networks, optimizers and step of one run; knows how to save and restore itself."""

    def __init__(self, config: TrainConfig, device: torch.device, dist: DistContext | None = None):
        self.config, self.device = config, device
        self.dist = group_of(dist)  # data parallel over several ranks, or None
        torch.manual_seed(config.seed)  # weight init, latents and augmentation all use it
        self.G = build_generator(config).to(device)
        self.D = build_discriminator(config).to(device)
        self.channels_last = uses_channels_last(config, device)
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.g_lr, betas=config.g_betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.d_lr, betas=config.d_betas)
        self.ema = (
            EMA(self.G, config.ema_decay, config.ema_rampup)
            if config.ema_decay is not None
            else None
        )
        if self.dist is not None:
            # BatchNorm over the global batch; after the EMA copy, whose BatchNorm stays plain
            # (it is never trained, and its standing statistics are computed alone)
            convert_batchnorm(self.G, self.dist)
            convert_batchnorm(self.D, self.dist)
        # adaptive augmentation's p (a device scalar) and its running statistics: run state,
        # saved and restored with the rest
        self.ada = (
            AdaptiveP(
                target=config.ada_target,
                interval=config.ada_interval,
                kimg=config.ada_kimg,
                batch_size=config.batch_size,
                device=device,
                reduce=self.dist.sum_across if self.dist is not None else None,
            )
            if config.augment_p == "adaptive" and config.augment_ops
            else None
        )
        self.step = 0
        self.rollbacks = 0  # divergences rolled back so far (on_divergence="rollback")

    @property
    def augment_p(self) -> float | torch.Tensor:
        """The probability each augment op is applied with: the config's, or the adaptive one."""
        if self.ada is not None:
            return self.ada.p
        return float(self.config.augment_p)

    def augment_probability(self) -> float | None:
        if not self.config.augment_ops:
            return None
        return float(self.augment_p)  # a device sync: reports only

    def train_mode(self) -> None:
        self.G.train()
        self.D.train()

    def save(
        self, run_dir: Path, batcher: Batcher, losses: dict[str, float]
    ) -> ckpt.CheckpointInfo:
        """Write a checkpoint of everything needed to continue exactly from here."""
        gen = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        self.prepare_checkpoint()
        if self.ema is not None:
            gen.update({f"G_ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        state = {f"D.{k}": v for k, v in self.D.state_dict().items()}
        if self.ada is not None:
            state.update({f"ada.{k}": v for k, v in self.ada.state_dict().items()})
        return self._write(run_dir, batcher, losses, gen, state)

    def prepare_checkpoint(self) -> None:
        if self.ema is not None:
            # The averaged G gets BatchNorm statistics of its own outputs, not the raw G's
            # (copied at every update); the next update copies them over again, so training
            # itself is unaffected and a resumed run still equals an uninterrupted one.
            standing_batchnorm_stats(
                self.ema.model, batch_size=self.config.batch_size, seed=self.config.seed
            )

    def _modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"G": self.G, "D": self.D}
        if self.ema is not None:
            modules["G_ema"] = self.ema.model
        return modules

    def restore(self, ckpt_dir: Path, batcher: Batcher) -> None:
        """Load a checkpoint written by save(); training then continues as if never stopped."""
        meta, gen, state = ckpt.load_checkpoint(ckpt_dir)
        self.G.load_state_dict(ckpt.sub_state(gen, "G"))
        if self.ema is not None:
            ema_state = ckpt.sub_state(gen, "G_ema") or ckpt.sub_state(gen, "G")
            self.ema.model.load_state_dict(ema_state)
        self.D.load_state_dict(ckpt.sub_state(state, "D"))
        if self.ada is not None:
            self.ada.load_state_dict(ckpt.sub_state(state, "ada"))
        self._restore_run(meta, state, batcher)
