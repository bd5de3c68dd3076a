"""The loops that benchmarks/train_throughput.py times, and its profiler.

``run_engine``: ``gan_core.training.train`` timed between two of its own progress reports;
``run_bare``: the textbook loop of the same nets (the config's arch: dcgan or resnet, built
by the same ``build_generator``/``build_discriminator``), loss, optimizers and data, with one lever
at a time (channels_last, bf16/fp16 autocast, fused Adam, torch.compile, host-side batch
indices); ``profile``: cProfile + torch.profiler of a few steps of each.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gan_core.config import TrainConfig
from gan_core.data import ImageTensorDataset
from gan_core.nets import build_discriminator, build_generator
from gan_core.training import TrainHooks, train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- engine


def run_engine(
    config: TrainConfig,
    dataset: ImageTensorDataset,
    warmup: int,
    steps: int,
    progress_interval: float,
) -> dict:
    """train() for warmup+steps steps; timed between two progress reports (both are device
    syncs: the loop flushes its pending losses to the CPU before reporting)."""
    marks: list[tuple[int, float, float]] = []

    def on_progress(p) -> None:
        marks.append((p.step, time.perf_counter(), time.process_time()))

    run_dir = Path(tempfile.mkdtemp(prefix="ganforge-bench-"))
    try:
        result = train(
            config,
            run_dir,
            TrainHooks(on_progress=on_progress, progress_interval=progress_interval),
            dataset=dataset,
            resume=False,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    assert result.status == "succeeded" and result.step == config.steps, result
    # start: the first report at or after the warm-up; end: the report at the last step,
    # which the loop makes before writing its final checkpoint (so the save is not timed).
    start = next((m for m in marks if m[0] >= warmup), None)
    end = marks[-1]
    if start is None or end[0] != config.steps or end[0] - start[0] < max(1, steps // 4):
        raise RuntimeError(
            f"too few progress reports to time steady state: {marks}; "
            "lower --progress-interval or raise --steps"
        )
    n = end[0] - start[0]
    dt, cpu = end[1] - start[1], end[2] - start[2]
    images = n * config.batch_size * config.d_steps
    return {
        "images_per_sec": images / dt,
        "images_per_cpu_sec": images / cpu,
        "timed_steps": n,
        "seconds": dt,
        "cpu_seconds": cpu,
    }


# ----------------------------------------------------------------------------- bare loop


def run_bare(
    config: TrainConfig,
    images: torch.Tensor,
    warmup: int,
    steps: int,
    *,
    precision: str,
    channels_last: bool,
    host_index: bool = False,
    fused: bool = False,
    compiled: bool = False,
) -> dict:
    """The config's nets (any arch) trained by the textbook loop: hinge loss, Adam; no hooks,
    EMA, augmentation, gradient penalties or checkpoints. Only the recipe it runs is accepted
    (a config asking for more would make the comparison with the engine dishonest).

    ``fused``: Adam's fused kernel instead of the default foreach one; ``compiled``: G and D
    through ``torch.compile`` (compiled in the warm-up steps, not timed).

    images: the uint8 (N, C, H, W) dataset, already on the device.
    """
    mismatched = {
        "loss": config.loss != "hinge",
        "r1_gamma": config.r1_gamma > 0,
        "r2_gamma": config.r2_gamma > 0,
        "augment": config.augment is not None,
        "ema_decay": config.ema_decay is not None,
        "conditional": config.conditional,
        "d_steps": config.d_steps != 1,
        "lr_schedule": config.lr_schedule != "constant",
    }
    if any(mismatched.values()):
        names = [k for k, v in mismatched.items() if v]
        raise ValueError(f"run_bare trains hinge loss without extras; config sets {names}")
    device = images.device
    torch.manual_seed(config.seed)
    G = build_generator(config).to(device)
    D = build_discriminator(config).to(device)
    if channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    G.train()
    D.train()
    opt = {"fused": True} if fused else {}
    opt_g = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=config.g_betas, **opt)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.d_lr, betas=config.d_betas, **opt)
    if compiled:
        G, D = torch.compile(G), torch.compile(D)  # type: ignore[assignment]
    B, N, latent = config.batch_size, images.shape[0], config.latent_dim
    if precision == "fp32":
        autocast = contextlib.nullcontext
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16

        def autocast():
            return torch.autocast(device.type, dtype=dtype)

    index_device = torch.device("cpu") if host_index else device
    perm, pos = torch.randperm(N, device=index_device), 0

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal perm, pos
        if pos + B > N:
            perm, pos = torch.randperm(N, device=index_device), 0
        idx = perm[pos : pos + B]
        if host_index:
            idx = idx.to(device)  # blocking host->device copy, as Batcher.next() does
        pos += B
        x = images[idx].float().div_(127.5).sub_(1.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = torch.randn(B, latent, device=device)
        with autocast():
            fake = G(z)
            real_logits, fake_logits = D(x), D(fake.detach())
            d_loss = (
                F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()
            )
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with autocast():
            g_loss = -D(fake).float().mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return d_loss.detach(), g_loss.detach()

    for _ in range(warmup):
        step()
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        d, g = step()
    losses = torch.stack([d, g]).float().cpu()  # syncs, like the engine's report
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not torch.isfinite(losses).all():
        raise RuntimeError(f"bare loop diverged: {losses.tolist()}")
    return {
        "images_per_sec": steps * B / dt,
        "images_per_cpu_sec": steps * B / cpu,
        "timed_steps": steps,
        "seconds": dt,
        "cpu_seconds": cpu,
    }


# ----------------------------------------------------------------------------- profile


def profile(
    config_plain: TrainConfig,
    dataset: ImageTensorDataset,
    images: torch.Tensor,
    steps: int,
    out_dir: Path,
    precision: str,
    channels_last: bool,
) -> dict:
    """cProfile + torch.profiler of a few engine (apples-to-apples) and bare steps."""
    report = {}
    cfg = config_plain.model_copy(update={"steps": steps, "checkpoint_every": 10**7})
    for name, fn in (
        # one report at step 1 and one at the end: no extra syncs from progress reporting
        ("engine", lambda: run_engine(cfg, dataset, 1, steps - 1, 1e9)),
        (
            "bare",
            lambda: run_bare(
                cfg, images, 1, steps - 1, precision=precision, channels_last=channels_last
            ),
        ),
    ):
        prof = cProfile.Profile()
        acts = [torch.profiler.ProfilerActivity.CPU]
        if images.device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts) as tp:
            prof.enable()
            fn()
            prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
        averages = tp.key_averages()
        table = averages.table(sort_by="self_cpu_time_total", row_limit=30)
        # host<->device syncs (cudaStreamSynchronize / cudaDeviceSynchronize ...) per training step
        syncs = sum(e.count for e in averages if "Synchronize" in e.key)
        text = f"== {name}: cProfile (cumulative) ==\n{s.getvalue()}\n== {name}: torch.profiler ==\n{table}\n"
        path = out_dir / f"train_profile_{name}.txt"
        path.write_text(text)
        report[name] = {"file": str(path), "cuda_sync_calls_per_step": syncs / steps}
        print(f"profile of {name} written to {path}; CUDA sync calls per step: {syncs / steps:.2f}")
    if images.device.type == "cuda":
        # The suspect on CUDA: Batcher.next() copies its CPU index slice with a blocking .to(),
        # which PyTorch implements as cudaMemcpyAsync + cudaStreamSynchronize.
        from gan_core.data import Batcher

        batcher = Batcher(dataset, config_plain.batch_size, seed=0, device=images.device)
        batcher.next()
        torch.cuda.synchronize()
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        ) as tp:
            for _ in range(20):
                batcher.next()
            torch.cuda.synchronize()
        syncs = sum(e.count for e in tp.key_averages() if "Synchronize" in e.key) - 1  # our own
        report["batcher_next_sync_calls_per_call"] = syncs / 20
        print(f"Batcher.next(): {syncs / 20:.2f} CUDA sync calls per call")
    report["note"] = (
        "engine sync counts include the final checkpoint save (device->host copies); "
        "see batcher_next_sync_calls_per_call for the per-step source"
    )
    return report
