"""The training loop's bookkeeping: progress reports, NaN checks, checkpoints and the stop
check (``Monitor``), alone or as one rank of a data-parallel group (gan_core.distributed):
there every rank checks the global losses and the weights at the same steps, so all of
them fail (or roll back) together, and only rank 0 reports, writes checkpoints, calls the
hooks and decides to stop; the others follow it through the per-step collective.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gan_core import checkpoint as ckpt
from gan_core.distributed import DistContext, group_of

if TYPE_CHECKING:
    from gan_core.training import TrainHooks

__all__ = ["Monitor", "Progress", "TrainingDiverged"]


@dataclass(frozen=True)
class Progress:
    step: int  # generator steps done
    total_steps: int
    epoch: float  # passes over the dataset so far
    losses: dict[str, float]  # mean over the steps since the last report
    images_per_sec: float  # real images consumed per second since the last report
    eta_seconds: float | None
    # the augmentation probability at the report (adaptive: where p has moved to); None
    # when the run augments nothing
    augment_p: float | None = None


class TrainingDiverged(RuntimeError):
    """A loss or a weight became NaN or Inf; weights after that step are not kept."""

    def __init__(self, step: int, losses: dict[str, float], what: str = "loss"):
        self.step = step
        super().__init__(f"training diverged at step {step}: non-finite {what} {losses}")


class Monitor:
    """The loop's bookkeeping: progress reports, NaN checks, checkpoints, and the stop check."""

    def __init__(
        self,
        state: Any,
        batcher: Any,
        run_dir: Path,
        hooks: TrainHooks,
        dist: DistContext | None = None,
    ):
        self.state, self.batcher, self.run_dir, self.hooks = state, batcher, run_dir, hooks
        self.dist = group_of(dist)
        self.pending: list[torch.Tensor] = []  # per-step [d_loss, g_loss], on device until a report
        self.last_ckpt: Path | None = ckpt.latest_checkpoint(run_dir)
        self.last_saved_step = state.step if self.last_ckpt is not None else -1
        self.last_good_losses: dict[str, float] = {}
        self.t_report = self.t_stop = time.monotonic()
        self.step_at_report = state.step
        self.first_report = True  # report the first step at once: "it started" is worth knowing

    def flush(self) -> dict[str, float]:
        """Check the pending losses for NaN/Inf and return their means."""
        if not self.pending:
            return self.last_good_losses
        window = torch.stack(self.pending).float().cpu()  # (steps, 2); one device sync per report
        first_step = self.state.step - len(self.pending) + 1
        bad = (~torch.isfinite(window)).any(dim=1).nonzero()
        self.pending = []
        if bad.numel():
            i = int(bad[0])
            raise TrainingDiverged(
                first_step + i, {"d": float(window[i, 0]), "g": float(window[i, 1])}
            )
        self.last_good_losses = {"d": float(window[:, 0].mean()), "g": float(window[:, 1].mean())}
        return self.last_good_losses

    def save(self) -> None:
        state, hooks = self.state, self.hooks
        losses = self.flush()  # never write weights that follow a non-finite loss
        # Weights can go bad while losses stay finite (e.g. BatchNorm running stats
        # overflowing); a checkpoint that would sample garbage is not a "last good" one.
        bad = state.non_finite_tensor()
        if bad is not None:
            raise TrainingDiverged(state.step, losses, what=f"weights ({bad})")
        if self.dist is not None and not self.dist.is_main:  # rank 0 writes it
            state.prepare_checkpoint()  # what the save changes, so the ranks stay identical
            path = ckpt.checkpoint_root(self.run_dir) / ckpt.step_dir_name(state.step)
            self.last_ckpt, self.last_saved_step = path, state.step
            return
        started = time.monotonic()
        info = state.save(self.run_dir, self.batcher, losses)
        # the whole pause the checkpoint makes: what saving prepares (the EMA G's standing
        # BatchNorm statistics, 2,048 samples) as well as the write itself
        info = replace(info, seconds=time.monotonic() - started)
        self.last_ckpt, self.last_saved_step = info.path, state.step
        if hooks.on_checkpoint:
            hooks.on_checkpoint(info)  # the service records it and forgets the oldest first,
        protect = hooks.keep_also() if hooks.keep_also else ()  # so no record outlives its files
        ckpt.prune_checkpoints(self.run_dir, state.config.keep_checkpoints, protect=protect)

    def report(self, now: float) -> None:
        losses = self.flush()
        state, config = self.state, self.state.config
        if self.hooks.on_progress:
            steps = state.step - self.step_at_report
            elapsed = max(now - self.t_report, 1e-9)
            self.hooks.on_progress(
                Progress(
                    step=state.step,
                    total_steps=config.steps,
                    epoch=self.batcher.epoch,
                    losses=losses,
                    images_per_sec=steps * config.batch_size * config.d_steps / elapsed,
                    eta_seconds=(config.steps - state.step) * elapsed / max(steps, 1),
                    augment_p=state.augment_probability(),
                )
            )
        self.t_report, self.step_at_report = now, state.step

    def after_step(self, losses: torch.Tensor) -> bool:
        """Bookkeeping after one step; True when the run should stop here (canceled)."""
        if self.dist is not None:
            return self._after_group_step(losses, self.dist)
        state, config, hooks = self.state, self.state.config, self.hooks
        self.pending.append(losses)
        now = time.monotonic()
        done = state.step >= config.steps
        if now - self.t_report >= hooks.progress_interval or done or self.first_report:
            self.first_report = False
            self.report(now)
        saved = state.step % config.checkpoint_every == 0 or done
        if saved:
            self.save()
        # right after a save too: a stop asked for while it was written (and scored) needs
        # no second checkpoint one step later
        if (
            hooks.should_stop
            and not done
            and (saved or now - self.t_stop >= min(hooks.progress_interval, 0.5))
        ):
            self.t_stop = now
            if hooks.should_stop():
                if self.last_saved_step != state.step:
                    self.save()  # keep the work done so far; resume continues from here
                return True
        return False

    def _after_group_step(self, losses: torch.Tensor, dist: DistContext) -> bool:
        """after_step as one rank of a group: the same steps are saved, checked and stopped
        at on every rank; the per-step collective carries the losses and rank 0's stop, so
        rank 0 asks should_stop before this step's report (alone: after it)."""
        state, config, hooks = self.state, self.state.config, self.hooks
        now = time.monotonic()
        done = state.step >= config.steps
        stop = False
        interval = min(hooks.progress_interval, 0.5)
        if dist.is_main and hooks.should_stop and not done and now - self.t_stop >= interval:
            self.t_stop = now
            stop = hooks.should_stop()
        (d, g), stop = dist.share_step(losses, stop)
        if not (math.isfinite(d) and math.isfinite(g)):  # on every rank at this step
            raise TrainingDiverged(state.step, {"d": d, "g": g})
        if dist.is_main:
            self.pending.append(torch.tensor([d, g]))
            if now - self.t_report >= hooks.progress_interval or done or self.first_report:
                self.first_report = False
                self.report(now)
        saved = state.step % config.checkpoint_every == 0 or done or stop
        if saved:
            self.save()
        if stop or done or not saved:
            return stop
        # a stop asked for while the checkpoint was written (and scored) needs no second
        # checkpoint one step later: rank 0 asks again, and every rank hears its answer --
        # waiting as long as the writing and scoring take, not the step's timeout
        self.t_stop = now
        return dist.wait_for_main(
            dist.is_main and hooks.should_stop is not None and hooks.should_stop()
        )
