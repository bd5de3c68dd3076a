"""The training loop: ``train(config, run_dir, hooks)``, resumable and cancellable.

The hooks are the seam a job queue needs (as in stylegan2-ada's progress_fn /
abort_fn): progress at most about once a second, a cooperative should-stop, and
a callback per checkpoint written. Everything else -- data, nets, losses,
EMA, augmentation, checkpoints -- comes from the sibling modules.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core.augment import diff_augment
from gan_core.config import TrainConfig
from gan_core.data import Batcher, DatasetError, ImageTensorDataset, load_dataset
from gan_core.ema import EMA, standing_batchnorm_stats
from gan_core.losses import get_loss, gradient_penalty
from gan_core.nets import build_discriminator, build_generator

# Fields a resumed run may change; anything else must match the checkpoint it resumes.
RESUMABLE_CHANGES = frozenset(
    {"steps", "checkpoint_every", "keep_checkpoints", "device", "precision", "dataset"}
)


@dataclass(frozen=True)
class Progress:
    step: int  # generator steps done
    total_steps: int
    epoch: float  # passes over the dataset so far
    losses: dict[str, float]  # mean over the steps since the last report
    images_per_sec: float  # real images consumed per second since the last report
    eta_seconds: float | None


@dataclass
class TrainHooks:
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None  # cooperative cancel
    on_checkpoint: Callable[[ckpt.CheckpointInfo], None] | None = None
    progress_interval: float = 1.0  # seconds between progress reports (and stop checks)


@dataclass(frozen=True)
class TrainResult:
    status: Literal["succeeded", "canceled"]
    step: int
    checkpoint: Path | None
    config: TrainConfig = field(repr=False)


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


class _Run:
    """Networks, optimizers and state of one run; knows how to save and restore itself."""

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config, self.device = config, device
        torch.manual_seed(config.seed)  # weight init, latents and augmentation all use it
        self.G = build_generator(config).to(device)
        self.D = build_discriminator(config).to(device)
        if device.type == "cuda":  # NHWC convolutions are markedly faster on tensor cores
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.g_lr, betas=config.g_betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.d_lr, betas=config.d_betas)
        self.ema = EMA(self.G, config.ema_decay, config.ema_rampup) if config.ema_decay is not None else None
        self.step = 0

    def save(self, run_dir: Path, batcher: Batcher, losses: dict[str, float]) -> ckpt.CheckpointInfo:
        gen = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        if self.ema is not None:
            # The averaged G gets BatchNorm statistics of its own outputs, not the raw G's
            # (copied at every update); the next update copies them over again, so training
            # itself is unaffected and a resumed run still equals an uninterrupted one.
            standing_batchnorm_stats(
                self.ema.model, batch_size=self.config.batch_size, seed=self.config.seed
            )
            gen.update({f"G_ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        state = {f"D.{k}": v for k, v in self.D.state_dict().items()}
        og, og_meta = ckpt.optimizer_to_flat("opt_g", self.opt_g)
        od, od_meta = ckpt.optimizer_to_flat("opt_d", self.opt_d)
        state.update(og | od)
        state["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            state["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        state.update({f"batcher.{k}": v for k, v in batcher.state_dict().items()})
        return ckpt.write_checkpoint(
            run_dir,
            step=self.step,
            config=self.config,
            generator_tensors=gen,
            state_tensors=state,
            meta_extra={"epoch": batcher.epoch, "optimizers": {"opt_g": og_meta, "opt_d": od_meta}},
            losses=losses,
        )  # pruning comes after on_checkpoint (see _loop.save): records go before files

    def non_finite_tensor(self) -> str | None:
        """The name of the first NaN/Inf parameter or buffer of G, EMA G or D, if any."""
        modules = {"G": self.G, "D": self.D}
        if self.ema is not None:
            modules["G_ema"] = self.ema.model
        for prefix, module in modules.items():
            for name, t in module.state_dict().items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return f"{prefix}.{name}"
        return None

    def restore(self, ckpt_dir: Path, batcher: Batcher) -> None:
        meta, gen, state = ckpt.load_checkpoint(ckpt_dir)
        self.G.load_state_dict(ckpt.sub_state(gen, "G"))
        if self.ema is not None:
            ema_state = ckpt.sub_state(gen, "G_ema") or ckpt.sub_state(gen, "G")
            self.ema.model.load_state_dict(ema_state)
        self.D.load_state_dict(ckpt.sub_state(state, "D"))
        opts = meta["optimizers"]
        self.opt_g.load_state_dict(ckpt.optimizer_from_flat("opt_g", state, opts["opt_g"]))
        self.opt_d.load_state_dict(ckpt.optimizer_from_flat("opt_d", state, opts["opt_d"]))
        torch.set_rng_state(state["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in state:
            torch.cuda.set_rng_state(state["rng.cuda"], self.device)
        batcher.load_state_dict(ckpt.sub_state(state, "batcher"))
        self.step = int(meta["step"])


def _check_resumable(saved: TrainConfig, wanted: TrainConfig) -> TrainConfig:
    a, b = saved.model_dump(), wanted.model_dump()
    # Dataset-dependent fields were resolved in the saved config; unset ones mean "same".
    for key in ("channels", "num_classes"):
        if b[key] is None:
            b[key] = a[key]
    changed = sorted(k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"cannot resume: {', '.join(changed)} differ from the checkpoint's config")
    return TrainConfig.model_validate({**a, **{k: b[k] for k in RESUMABLE_CHANGES}})


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or config.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    hooks: TrainHooks | None = None,
    *,
    dataset: ImageTensorDataset | None = None,  # preloaded data; else loaded from config.dataset
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
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if latest is not None:
        config = _check_resumable(ckpt.config_from_meta(ckpt.read_meta(latest)), config)
    if dataset is None:
        dataset = load_dataset(
            config.dataset,
            image_size=config.image_size,
            channels=config.channels,
            data_dirs=data_dirs,
            allow_download=allow_download,
            seed=config.seed,
        )
    config = resolve_config(config, dataset)
    if tuple(dataset.images.shape[2:]) != (config.image_size, config.image_size):
        raise DatasetError(f"image_size: dataset images are {tuple(dataset.images.shape[2:])}")

    run = _Run(config, device)
    batcher = Batcher(dataset, config.batch_size, seed=config.seed, device=device)
    if latest is not None:
        run.restore(latest, batcher)
    return _loop(run, batcher, run_dir, hooks)


def _loop(run: _Run, batcher: Batcher, run_dir: Path, hooks: TrainHooks) -> TrainResult:
    config, device = run.config, run.device
    G, D, opt_g, opt_d = run.G, run.D, run.opt_g, run.opt_d
    loss_fn = get_loss(config.loss)
    ops = config.augment_ops
    # fp16 needs loss scaling; one scaler per optimizer since D may step several times per G step.
    fp16 = device.type == "cuda" and config.precision == "fp16"
    d_scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    g_scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    B = config.batch_size
    channels_last = device.type == "cuda"


    pending: list[torch.Tensor] = []  # per-step [d_loss, g_loss] kept on device until a report
    last_ckpt: Path | None = ckpt.latest_checkpoint(run_dir)
    last_saved_step = run.step if last_ckpt is not None else -1
    last_good_losses: dict[str, float] = {}
    t_report = t_stop = time.monotonic()
    step_at_report = run.step
    first_report = True  # report the first step at once: "it started" is worth knowing fast
    G.train()
    D.train()

    def flush() -> dict[str, float]:
        """Check the pending losses for NaN/Inf and return their means."""
        nonlocal pending, last_good_losses
        if not pending:
            return last_good_losses
        window = torch.stack(pending).float().cpu()  # (steps, 2); one device sync per report
        first_step = run.step - len(pending) + 1
        bad = (~torch.isfinite(window)).any(dim=1).nonzero()
        pending = []
        if bad.numel():
            i = int(bad[0])
            raise TrainingDiverged(first_step + i, {"d": float(window[i, 0]), "g": float(window[i, 1])})
        last_good_losses = {"d": float(window[:, 0].mean()), "g": float(window[:, 1].mean())}
        return last_good_losses

    def save() -> None:
        nonlocal last_ckpt, last_saved_step
        losses = flush()  # never write weights that follow a non-finite loss
        # Weights can go bad while losses stay finite (e.g. BatchNorm running stats
        # overflowing); a checkpoint that would sample garbage is not a "last good" one.
        bad = run.non_finite_tensor()
        if bad is not None:
            raise TrainingDiverged(run.step, losses, what=f"weights ({bad})")
        info = run.save(run_dir, batcher, losses)
        last_ckpt, last_saved_step = info.path, run.step
        if hooks.on_checkpoint:
            hooks.on_checkpoint(info)  # the service records it and forgets the oldest first,
        ckpt.prune_checkpoints(run_dir, config.keep_checkpoints)  # so no record outlives its files

    status: Literal["succeeded", "canceled"] = "succeeded"
    while run.step < config.steps:
        # ---- discriminator: d_steps updates; the last fake batch is reused for G's update
        for i in range(config.d_steps):
            x, y = batcher.next()  # x: (B, C, H, W) in [-1, 1]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            z = torch.randn(B, config.latent_dim, device=device)
            yf = y  # conditional: fakes take the real batch's labels, so D compares like with like
            last = i == config.d_steps - 1
            with _autocast(config, device):
                with torch.set_grad_enabled(last):
                    fake = G(z, yf)
                real_logits = D(diff_augment(x, ops), y)
                fake_logits = D(diff_augment(fake.detach(), ops), yf)
                d_loss = loss_fn.d_loss(real_logits, fake_logits)
            if loss_fn.needs_gradient_penalty and config.gp_weight > 0:
                d_loss = d_loss + config.gp_weight * gradient_penalty(D, x, fake.detach().float(), y)
            opt_d.zero_grad(set_to_none=True)
            d_scaler.scale(d_loss).backward()
            d_scaler.step(opt_d)
            d_scaler.update()
        # ---- generator
        with _autocast(config, device):
            g_loss = loss_fn.g_loss(D(diff_augment(fake, ops), yf))
        opt_g.zero_grad(set_to_none=True)
        g_scaler.scale(g_loss).backward()
        g_scaler.step(opt_g)
        g_scaler.update()
        run.step += 1
        if run.ema is not None:
            run.ema.update(G, run.step)
        pending.append(torch.stack([d_loss.detach(), g_loss.detach()]))

        now = time.monotonic()
        done = run.step >= config.steps
        if now - t_report >= hooks.progress_interval or done or first_report:
            first_report = False
            losses = flush()
            if hooks.on_progress:
                rate = (run.step - step_at_report) * B * config.d_steps / max(now - t_report, 1e-9)
                per_step = (now - t_report) / max(run.step - step_at_report, 1)
                hooks.on_progress(
                    Progress(
                        step=run.step,
                        total_steps=config.steps,
                        epoch=batcher.epoch,
                        losses=losses,
                        images_per_sec=rate,
                        eta_seconds=(config.steps - run.step) * per_step,
                    )
                )
            t_report, step_at_report = now, run.step
        if run.step % config.checkpoint_every == 0 or done:
            save()
        if hooks.should_stop and not done and now - t_stop >= min(hooks.progress_interval, 0.5):
            t_stop = now
            if hooks.should_stop():
                if last_saved_step != run.step:
                    save()  # keep the work done so far; resume continues from here
                status = "canceled"
                break
    if last_saved_step != run.step:  # e.g. steps already reached when resuming
        save()
    return TrainResult(status=status, step=run.step, checkpoint=last_ckpt, config=config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "Progress",
    "TrainHooks",
    "TrainResult",
    "TrainingDiverged",
    "count_parameters",
    "resolve_config",
    "resolve_device",
    "train",
]
