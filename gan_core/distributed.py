"""Data-parallel training: this process as one rank of a torch.distributed process group.

Every rank holds the same G, D, EMA and optimizers and trains on its slice of each global
batch (``config.batch_size`` images, split evenly). What keeps the ranks identical:

- the same global batch indices (the Batcher, same seed) and the same global latents (the
  global torch RNG, same seed) on every rank, each rank taking its slice, so the global RNG
  streams of all ranks stay in lockstep and a checkpoint is rank-free;
- gradients averaged after each backward with ONE all_reduce of the flattened grads (as
  StyleGAN2-ADA does; DDP cannot double-backward through R1/R2 penalties);
- BatchNorm over the global batch (gan_core.sync_batchnorm);
- per step, one small all_reduce of [d_loss, g_loss, stop]: every rank sees the global mean
  losses (so a NaN fails every rank at the same step) and rank 0's decision to stop.

Augmentation draws differ per rank by design: each rank augments its own slice from a
``RankRandom`` generator reseeded every update from (seed, update, rank), so the run is
deterministic for (seed, number of ranks) without touching the global RNG. Starting ranks:
gan_core.launch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

__all__ = ["PATIENT_TIMEOUT_S", "DistContext", "RankRandom", "all_reduce_sum", "group_of"]

# How long the other ranks wait for rank 0's own work (DistContext.wait_for_main); a step's
# collectives keep the group's timeout (gan_core.launch), which catches a stalled rank.
PATIENT_TIMEOUT_S = 3600.0
_patient: tuple[Any, Any] | None = None  # (the group it serves, its patient gloo group)


@dataclass(frozen=True)
class DistContext:
    """This process's place in an initialised process group: ``rank`` of ``world``."""

    rank: int
    world: int
    group: Any = None  # a torch ProcessGroup; None is the default (WORLD) group

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports, writes checkpoints and decides to stop."""
        return self.rank == 0

    @classmethod
    def current(cls, group: Any = None) -> DistContext | None:
        """The context of an initialised process group (gloo on CPU, NCCL on CUDA); None
        when torch.distributed is not initialised."""
        if not torch_dist.is_available() or not torch_dist.is_initialized():
            return None
        return cls(torch_dist.get_rank(group), torch_dist.get_world_size(group), group)

    @property
    def device(self) -> torch.device:
        """Where this group's collectives take tensors: the current CUDA device under NCCL."""
        if torch_dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def shard(self, batch_size: int) -> slice:
        """This rank's part of a global batch of batch_size."""
        if batch_size % self.world:
            raise ValueError(
                f"batch_size: {batch_size} is not divisible by the {self.world} devices"
            )
        b = batch_size // self.world
        return slice(self.rank * b, (self.rank + 1) * b)

    def average_gradients(self, module: nn.Module) -> None:
        """Replace each gradient of module by its mean over the ranks (one all_reduce)."""
        params = [p for p in module.parameters() if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
        torch_dist.all_reduce(flat, group=self.group)
        flat /= self.world
        offset = 0
        for p in params:
            assert p.grad is not None
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view(p.grad.shape))
            offset += n

    def sum_across(self, t: Tensor) -> Tensor:
        """t summed over the ranks (a new tensor; no autograd)."""
        out = t.detach().clone()
        torch_dist.all_reduce(out, group=self.group)
        return out

    def share_step(self, losses: Tensor, stop: bool) -> tuple[list[float], bool]:
        """The per-step collective: ([d_loss, g_loss] averaged over the ranks, rank 0's stop).

        Only rank 0's ``stop`` counts; a NaN on any rank makes the mean NaN on every rank.
        """
        flag = 1.0 if stop and self.is_main else 0.0
        buf = torch.cat([losses.detach().float().reshape(2), losses.new_tensor([flag]).float()])
        torch_dist.all_reduce(buf, group=self.group)
        d, g, total = buf.tolist()  # one device sync per step
        return [d / self.world, g / self.world], total > 0

    def decide(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        t = torch.tensor([1.0 if flag and self.is_main else 0.0], device=self.device)
        torch_dist.all_reduce(t, group=self.group)
        return bool(t.item() > 0)

    def spread(self, value: int) -> tuple[int, int]:
        """(the smallest, the largest) of ``value`` over the ranks: one collective."""
        t = torch.tensor([float(value), -float(value)], device=self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX, group=self.group)
        return int(-t[1].item()), int(t[0].item())

    def patient_group(self) -> Any:
        """A gloo group over the same ranks with a long timeout (PATIENT_TIMEOUT_S), for the
        waits on what rank 0 alone does: preparing its hooks' work before the first step
        (the service trains a scorer's extractor there) and writing and scoring a
        checkpoint. Made by every rank at the same point (a collective), once per group."""
        global _patient
        key = self.group if self.group is not None else torch_dist.group.WORLD
        if _patient is None or _patient[0] is not key:
            timeout = timedelta(seconds=PATIENT_TIMEOUT_S)
            _patient = (key, torch_dist.new_group(backend="gloo", timeout=timeout))
        return _patient[1]

    def wait_for_main(self, flag: bool = False) -> bool:
        """Wait, up to PATIENT_TIMEOUT_S, until rank 0 gets here; its ``flag`` on every rank."""
        t = torch.tensor([1.0 if flag and self.is_main else 0.0])  # gloo: a CPU tensor
        torch_dist.all_reduce(t, group=self.patient_group())
        return bool(t.item() > 0)

    def barrier(self) -> None:
        """Wait until every rank gets here (an all_reduce: the same timeout as any step)."""
        self.decide(False)


def group_of(dist: DistContext | None) -> DistContext | None:
    """dist when it has several ranks; None for none or one (the single-process path)."""
    return dist if dist is not None and dist.world > 1 else None


class _AllReduceSum(torch.autograd.Function):
    """all_reduce SUM whose backward is again an all_reduce SUM of the incoming gradients:
    every rank's loss depends on every rank's input through the sum."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        torch_dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: Tensor, group: Any = None) -> Tensor:
    """The sum of tensor over the ranks, differentiable (what sync BatchNorm needs; our own
    because torch.distributed.nn.functional.all_reduce is deprecated)."""
    out: Tensor = _AllReduceSum.apply(tensor, group)
    return out


class RankRandom:
    """The generator a rank augments its slice of a batch with, reseeded at every D and G
    update from (seed, phase, update, rank): ranks draw differently, the global RNG is not
    touched (so it stays in lockstep on every rank), and a resumed run draws exactly as an
    uninterrupted one without any state in the checkpoint."""

    def __init__(self, seed: int, rank: int, device: torch.device):
        self.seed, self.rank = seed, rank
        self.gen = torch.Generator(device=device)

    def at(self, phase: str, update: int) -> torch.Generator:
        """The generator, seeded for one update (phase "d" or "g")."""
        key = f"{self.seed}/{phase}/{update}/{self.rank}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        self.gen.manual_seed(int.from_bytes(digest, "little") >> 1)
        return self.gen
