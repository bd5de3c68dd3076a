"""The training loop: ``train(config, run_dir, hooks)``, resumable and cancellable.

The hooks are the seam a job queue needs (as in stylegan2-ada's progress_fn /
abort_fn): the resolved config at the start, progress at most about once a second, a
cooperative should-stop, and a callback per checkpoint written. The loop itself only calls
a ``GANStep`` (gan_core.steps: the D and G phases) and a ``Monitor`` (gan_core.monitor:
reports, checkpoints, the stop check); the run's networks and optimizers are a
``TrainState`` (gan_core.state). With ``dist`` it trains as one rank of a data-parallel
process group (gan_core.distributed, gan_core.launch).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from gan_core import checkpoint as ckpt
from gan_core.config import TrainConfig
from gan_core.data import Batcher, DatasetError, ImageTensorDataset, load_dataset
from gan_core.data.pairs import PairDataset
from gan_core.distributed import DistContext, group_of
from gan_core.jobconfig import AnyConfig
from gan_core.monitor import Monitor, Progress, TrainingDiverged
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
        "devices",  # a checkpoint is rank-free: any number of ranks continues it
    }
)


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
    return type(saved).model_validate({**a, **{k: b[k] for k in RESUMABLE_CHANGES if k in b}})


class RunKind(Protocol):
    """How one kind of job (noise, or translation) loads its data, resolves its config and
    builds its state, batches and step; the loop around them is the same for every kind."""

    def load(self, config: Any, data_dirs: Sequence[str | Path], allow_download: bool) -> Any: ...

    def resolve(self, config: Any, data: Any) -> Any: ...

    def start(self, config: Any, device: torch.device, data: Any) -> tuple[Any, Any]: ...

    def step(self, state: Any, batcher: Any) -> Any: ...


class _Noise:
    """Noise (and a class) to an image: TrainConfig, TrainState, Batcher, GANStep; alone, or
    as one rank of a data-parallel group (dist)."""

    def __init__(self, dist: DistContext | None = None):
        self.dist = group_of(dist)

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
        shard = self.dist.shard(config.batch_size) if self.dist is not None else None
        return TrainState(config, device, self.dist), Batcher(
            data, config.batch_size, seed=config.seed, device=device, shard=shard
        )

    def step(self, state: TrainState, batcher: Batcher) -> GANStep:
        return GANStep(state, batcher)


def run_kind(config: AnyConfig, dist: DistContext | None = None) -> RunKind:
    """The kind of run a config asks for (as one rank of dist's group, if it has several)."""
    if isinstance(config, TranslationConfig):
        if group_of(dist) is not None:
            raise ValueError("config.devices: translation jobs train on one device for now")
        from gan_core.translation.run import TRANSLATION  # local: only translation jobs need it

        return TRANSLATION
    return _Noise(dist)


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
    # this process as one rank of an initialised process group (gan_core.distributed; start
    # one with gan_core.launch): config.devices must equal its size. Only rank 0 calls the
    # hooks and writes checkpoints; every rank returns the same result
    dist: DistContext | None = None,
) -> TrainResult:
    """Train a GAN as ``config`` says, writing checkpoints under ``run_dir/checkpoints``."""
    group = group_of(dist)
    hooks = hooks or TrainHooks()
    if group is not None and not group.is_main:  # the others follow rank 0's decisions
        hooks = TrainHooks(progress_interval=hooks.progress_interval)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if group is None or group.is_main:
        ckpt.remove_stale_temp(run_dir)
    device = resolve_device(config.device)
    kind = run_kind(config, group)
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if group is not None:
        group.patient_group()  # every rank, here: made once, before rank 0 goes its own way
        _check_same_start(group, latest)
    if latest is not None:
        config = _check_resumable(ckpt.job_config_from_meta(ckpt.read_meta(latest)), config)
    _check_devices(config, group)
    data = dataset if dataset is not None else kind.load(config, data_dirs, allow_download)
    # the stored config (and so every checkpoint, and the job on_start records) says what
    # this run does: channels etc. from the data, precision "auto" from the device
    config = with_resolved_precision(kind.resolve(config, data), device)

    if hooks.on_start:
        hooks.on_start(config, data)
    if group is not None:  # rank 0's on_start may take minutes (a scorer to prepare)
        group.wait_for_main()
    state, batcher = _start(kind, config, device, data, latest)
    while True:
        try:
            return _loop(kind, state, batcher, run_dir, hooks, group)
        except TrainingDiverged as exc:
            if config.on_divergence != "rollback" or state.rollbacks >= config.max_rollbacks:
                raise
            state, batcher = _roll_back(
                kind, config, device, data, run_dir, state.rollbacks + 1, exc, hooks
            )


def _check_same_start(group: DistContext, latest: Path | None) -> None:
    """Every rank must resume from the same checkpoint: each reads its own run_dir, and
    across hosts (torchrun) those may differ, e.g. a local --out holding rank 0's only."""
    low, high = group.spread(-1 if latest is None else int(latest.name.split("-")[-1]))
    if low != high:

        def said(step: int) -> str:
            return "no checkpoint" if step < 0 else f"step {step}"

        raise ValueError(
            f"run_dir: the ranks would start from different checkpoints ({said(low)} and "
            f"{said(high)}); give every rank the same run directory (a shared --out), or "
            "copy rank 0's checkpoints to every host first"
        )


def _check_devices(config: Any, group: DistContext | None) -> None:
    """config.devices (1 for a kind without it) must be the number of ranks training it."""
    world = group.world if group is not None else 1
    devices = getattr(config, "devices", 1)
    if devices != world:
        raise ValueError(
            f"config.devices: the config asks for {devices} devices but {world} "
            f"process{'es' if world > 1 else ''} train it; start one rank per device "
            "(gan_core.launch.launch, or torchrun) and pass each its DistContext"
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


def _loop(
    kind: RunKind,
    state: Any,
    batcher: Any,
    run_dir: Path,
    hooks: TrainHooks,
    group: DistContext | None = None,
) -> TrainResult:
    step, monitor = kind.step(state, batcher), Monitor(state, batcher, run_dir, hooks, group)
    status: Literal["succeeded", "canceled"] = "succeeded"
    state.train_mode()
    while state.step < state.config.steps:
        if monitor.after_step(step.step()):
            status = "canceled"
            break
    if monitor.last_saved_step != state.step:  # e.g. steps already reached when resuming
        monitor.save()
    if group is not None:  # every rank returns once rank 0 has written the last checkpoint
        group.wait_for_main()  # (and its hooks have scored it)
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
