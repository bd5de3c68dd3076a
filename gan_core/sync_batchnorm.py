"""BatchNorm over the global batch of a process group, on CPU (gloo) and CUDA (NCCL) alike.

torch.nn.SyncBatchNorm refuses CPU tensors, and the engine's tests run ranks on CPUs, so this
is our own: per channel, one differentiable all_reduce of [sum, sum of squares, count] gives
the global batch mean and (biased) variance; the running statistics move as BatchNorm moves
them (momentum, or the cumulative average when momentum is None; unbiased variance). The
module has BatchNorm's parameters and buffers under BatchNorm's names, so a state_dict (and
so a checkpoint) is the same as a plain BatchNorm's and loads into single-process nets.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_core.distributed import DistContext, all_reduce_sum

__all__ = ["SyncBatchNorm", "convert_batchnorm"]


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training-mode statistics are those of the group's global batch."""

    def __init__(self, like: nn.modules.batchnorm._BatchNorm, group: Any = None):
        super().__init__(
            like.num_features, like.eps, like.momentum, like.affine, like.track_running_stats
        )
        self.group = group
        self.train(like.training)
        # the same tensors, not copies: optimizers built on the plain net keep working
        if like.affine:
            self.weight, self.bias = like.weight, like.bias
        if like.track_running_stats:
            self.running_mean, self.running_var = like.running_mean, like.running_var
            self.num_batches_tracked = like.num_batches_tracked

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C) or (N, C, H, W)
        self._check_input_dim(x)
        if not self.training and self.track_running_stats:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat(
            [xf.sum(dims), (xf * xf).sum(dims), xf.new_full((1,), float(xf.numel() // c))]
        )
        total = all_reduce_sum(local, self.group)  # (2C + 1,)
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0.0)  # biased, as BatchNorm's
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n.detach())
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None and self.bias is not None:  # affine
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        # momentum None: the cumulative moving average
        mom = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if mom is None else mom
        unbiased = var * (n / (n - 1.0).clamp_min(1.0))  # tensors: no device sync
        # as BatchNorm's kernels write it: factor * batch + (1 - factor) * running
        self.running_mean.copy_(factor * mean + (1.0 - factor) * self.running_mean)
        self.running_var.copy_(factor * unbiased + (1.0 - factor) * self.running_var)


def convert_batchnorm(module: nn.Module, dist: DistContext) -> nn.Module:
    """Every BatchNorm inside module replaced, in place, by a SyncBatchNorm over dist's group
    that shares its parameters and buffers (state_dict keys and order unchanged)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, SyncBatchNorm
        ):
            setattr(module, name, SyncBatchNorm(child, dist.group))
        else:
            convert_batchnorm(child, dist)
    return module
