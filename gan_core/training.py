"""The training loop: ``train(config, run_dir, hooks)``, resumable and cancellable.

The hooks are the seam a job queue needs (as in stylegan2-ada's progress_fn /
abort_fn): the resolved config at the start, progress at most about once a second, a
cooperative should-stop, and a callback per checkpoint written. The loop itself only calls
a ``GANStep`` (gan_core.steps: the D and G phases) and a ``_Monitor`` (reports, checkpoints,
the stop check); the run's networks and optimizers are a ``TrainState`` (gan_core.state).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from gan_core import checkpoint as ckpt
from gan_core.config import TrainConfig
from gan_core.data import Batcher, DatasetError, ImageTensorDataset, load_dataset
from gan_core.data.pairs import PairDataset
from gan_core.jobconfig import AnyConfig
from gan_core.precision import with_resolved_precision
from gan_core.state import TrainState
from gan_core.steps import GANStep
from gan_core.translation.config import TranslationConfig

# Fields a resumed run may change; anything else must match the checkpoint it resumes.
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "checkpoint_every",
        "keep_checkpoints",
        "device",
        "precision",
        "dataset",
        "on_divergence",
        "max_rollbacks",
    }
)


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


@dataclass
class TrainHooks:
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None  # cooperative cancel
    on_checkpoint: Callable[[ckpt.CheckpointInfo], None] | None = None
    # the resolved config and the data, before step 1 (e.g. to prepare a scorer for it); a
    # translation job's data is a PairDataset
    on_start: Callable[[Any, Any], None] | None = None
    # steps of checkpoints to keep beyond the newest keep_checkpoints (e.g. the best one)
    keep_also: Callable[[], Collection[int]] | None = None
    on_rollback: Callable[[Rollback], None] | None = None  # a divergence rolled back
    progress_interval: float = 1.0  # seconds between progress reports (and stop checks)


@dataclass(frozen=True)
class Rollback:
    """A divergence the run recovered from (on_divergence="rollback")."""

    attempt: int  # 1..max_rollbacks
    diverged_at: int  # the step that went non-finite
    resumed_from: int  # the checkpoint step restored (0: no checkpoint yet, from the start)
    lr_scale: float  # learning rates are now the config's (and its schedule's) times this
    reason: str


@dataclass(frozen=True)
class TrainResult:
    status: Literal["succeeded", "canceled"]
    step: int
    checkpoint: Path | None
    config: AnyConfig = field(repr=False)


class TrainingDiverged(RuntimeError):
    """A loss or a weight became NaN or Inf; weights after that step are not kept."""

    def __init__(self, step: int, losses: dict[str, float], what: str = "loss"):
        self.step = step
        super().__init__(f"training diverged at step {step}: non-finite {what} {losses}")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_config(config: TrainConfig, dataset: ImageTensorDataset) -> TrainConfig:
    """Fill in the dataset-dependent fields so the config alone rebuilds the networks."""
    info = dataset.info
    if config.conditional and info.num_classes is None:
        raise DatasetError(f"conditional: dataset {config.dataset!r} has no labels")
    if config.conditional and config.num_classes not in (None, info.num_classes):
        raise DatasetError(
            f"num_classes: config says {config.num_classes}, dataset has {info.num_classes}"
        )
    update = {
        "channels": config.channels or int(dataset.images.shape[1]),
        "num_classes": info.num_classes if config.conditional else None,
    }
    return TrainConfig.model_validate({**config.model_dump(), **update})


def _check_resumable(saved: Any, wanted: Any) -> Any:
    if type(saved) is not type(wanted):
        raise ValueError(
            f"cannot resume: kind differs from the checkpoint's ({saved.kind}, not {wanted.kind})"
        )
    a, b = saved.model_dump(), wanted.model_dump()
    # Dataset-dependent fields were resolved in the saved config; unset ones mean "same".
    for key in saved.resolved_fields:
        if b[key] is None:
            b[key] = a[key]
    changed = sorted(k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"cannot resume: {', '.join(changed)} differ from the checkpoint's config")
    if b["precision"] == "auto":  # a resume keeps the precision the run used; asked, it changes
        b["precision"] = a["precision"]
    return type(saved).model_validate({**a, **{k: b[k] for k in RESUMABLE_CHANGES}})


class RunKind(Protocol):
    """How one kind of job (noise, or translation) loads its data, resolves its config and
    builds its state, batches and step; the loop around them is the same for every kind."""

    def load(self, config: Any, data_dirs: Sequence[str | Path], allow_download: bool) -> Any: ...

    def resolve(self, config: Any, data: Any) -> Any: ...

    def start(self, config: Any, device: torch.device, data: Any) -> tuple[Any, Any]: ...

    def step(self, state: Any, batcher: Any) -> Any: ...


class _Noise:
    """Noise (and a class) to an image: TrainConfig, TrainState, Batcher, GANStep."""

    def load(
        self, config: TrainConfig, data_dirs: Sequence[str | Path], allow_download: bool
    ) -> ImageTensorDataset:
        return load_dataset(
            config.dataset,
            image_size=config.image_size,
            channels=config.channels,
            data_dirs=data_dirs,
            allow_download=allow_download,
            seed=config.seed,
        )

    def resolve(self, config: TrainConfig, data: ImageTensorDataset) -> TrainConfig:
        config = resolve_config(config, data)
        if tuple(data.images.shape[2:]) != (config.image_size, config.image_size):
            raise DatasetError(f"image_size: dataset images are {tuple(data.images.shape[2:])}")
        return config

    def start(
        self, config: TrainConfig, device: torch.device, data: ImageTensorDataset
    ) -> tuple[TrainState, Batcher]:
        return TrainState(config, device), Batcher(
            data, config.batch_size, seed=config.seed, device=device
        )

    def step(self, state: TrainState, batcher: Batcher) -> GANStep:
        return GANStep(state, batcher)


def run_kind(config: AnyConfig) -> RunKind:
    """The kind of run a config asks for."""
    if isinstance(config, TranslationConfig):
        from gan_core.translation.run import TRANSLATION  # local: only translation jobs need it

        return TRANSLATION
    return _Noise()


def train(
    config: AnyConfig,
    run_dir: str | Path,
    hooks: TrainHooks | None = None,
    *,
    # preloaded data (a PairDataset for a translation job); else loaded from config.dataset
    dataset: ImageTensorDataset | PairDataset | None = None,
    data_dirs: Sequence[str | Path] = (),  # where built-in datasets are looked for
    allow_download: bool = False,  # let torchvision download a missing built-in
    resume: bool = True,  # continue from the run's latest checkpoint if there is one
) -> TrainResult:
    """Train a GAN as ``config`` says, writing checkpoints under ``run_dir/checkpoints``."""
    hooks = hooks or TrainHooks()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.remove_stale_temp(run_dir)
    device = resolve_device(config.device)
    kind = run_kind(config)
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if latest is not None:
        config = _check_resumable(ckpt.job_config_from_meta(ckpt.read_meta(latest)), config)
    data = dataset if dataset is not None else kind.load(config, data_dirs, allow_download)
    # the stored config (and so every checkpoint, and the job on_start records) says what
    # this run does: channels etc. from the data, precision "auto" from the device
    config = with_resolved_precision(kind.resolve(config, data), device)

    if hooks.on_start:
        hooks.on_start(config, data)
    state, batcher = _start(kind, config, device, data, latest)
    while True:
        try:
            return _loop(kind, state, batcher, run_dir, hooks)
        except TrainingDiverged as exc:
            if config.on_divergence != "rollback" or state.rollbacks >= config.max_rollbacks:
                raise
            state, batcher = _roll_back(
                kind, config, device, data, run_dir, state.rollbacks + 1, exc, hooks
            )


def _start(
    kind: RunKind, config: Any, device: torch.device, data: Any, checkpoint: Path | None
) -> tuple[Any, Any]:
    state, batcher = kind.start(config, device, data)
    if checkpoint is not None:
        state.restore(checkpoint, batcher)
    return state, batcher


def _roll_back(
    kind: RunKind,
    config: Any,
    device: torch.device,
    data: Any,
    run_dir: Path,
    attempt: int,
    exc: TrainingDiverged,
    hooks: TrainHooks,
) -> tuple[Any, Any]:
    """Back to the last good checkpoint (nothing after a divergence is ever written), with
    the learning rates halved once more and a new data order and latent stream."""
    last = ckpt.latest_checkpoint(run_dir)
    state, batcher = _start(kind, config, device, data, last)
    state.rollbacks = attempt
    scale = 0.5**attempt
    state.set_learning_rates()
    batcher.reshuffle(config.seed + 7919 * attempt)
    torch.manual_seed(config.seed + 7919 * attempt)
    event = Rollback(attempt, exc.step, state.step, scale, str(exc))
    if hooks.on_rollback:
        hooks.on_rollback(event)
    return state, batcher


class _Monitor:
    """The loop's bookkeeping: progress reports, NaN checks, checkpoints, and the stop check."""

    def __init__(self, state: Any, batcher: Any, run_dir: Path, hooks: TrainHooks):
        self.state, self.batcher, self.run_dir, self.hooks = state, batcher, run_dir, hooks
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
        info = state.save(self.run_dir, self.batcher, losses)
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


def _loop(kind: RunKind, state: Any, batcher: Any, run_dir: Path, hooks: TrainHooks) -> TrainResult:
    step, monitor = kind.step(state, batcher), _Monitor(state, batcher, run_dir, hooks)
    status: Literal["succeeded", "canceled"] = "succeeded"
    state.train_mode()
    while state.step < state.config.steps:
        if monitor.after_step(step.step()):
            status = "canceled"
            break
    if monitor.last_saved_step != state.step:  # e.g. steps already reached when resuming
        monitor.save()
    return TrainResult(
        status=status, step=state.step, checkpoint=monitor.last_ckpt, config=state.config
    )


__all__ = [
    "Progress",
    "Rollback",
    "TrainHooks",
    "TrainResult",
    "TrainingDiverged",
    "resolve_config",
    "run_kind",
    "resolve_device",
    "train",
]
