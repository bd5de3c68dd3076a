"""A job on several devices: the worker that claimed it trains it as a process group.

Rank 0 runs in the worker's pool process with the job's hooks (progress, checkpoints,
scores, cancel, shutdown), exactly as a one-device job does; ranks 1..N-1 are child
processes started by ``gan_core.launch`` that train with no hooks and follow rank 0's
decisions (gan_core.training). One device per rank: ``cuda:r`` on a GPU worker; on a CPU
worker N processes sharing its torch threads.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.process
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gan_core.distributed import DistContext
from gan_core.training import TrainHooks, TrainResult, resolve_device, train

log = logging.getLogger("ganforge.worker")
# The hooks of the job this process trains as rank 0. A module global, not an argument:
# launch pickles the arguments for the other ranks, and the hooks (database sessions, the
# lease's thread) are this process's alone. The other ranks import this module afresh.
_rank0_hooks: TrainHooks | None = None


_gpus_seen: int | None = None


def worker_devices(configured: int | None) -> int:
    """The devices this worker announces: GANFORGE_WORKER_DEVICES when set, else the GPUs
    CUDA sees, else 1. The GPUs are counted once, in a child process: the Celery parent
    must not touch CUDA before it forks its pool (a forked child of a process that has
    initialised CUDA cannot use it)."""
    global _gpus_seen
    if configured:
        return configured
    if _gpus_seen is None:
        _gpus_seen = _count_gpus()
    return max(1, _gpus_seen)


def _count_gpus() -> int:
    import torch

    if not torch.cuda._is_compiled() or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0  # a CPU build, or GPUs hidden (the compose file's CPU worker)
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        log.warning("could not count the GPUs (%s); announcing 1 device", exc)
        return 0


def _rank(
    dist: DistContext,
    config: Any,
    run_dir: Path,
    dataset: Any,
    data_dirs: Sequence[Path],
    allow_download: bool,
) -> TrainResult:
    hooks = _rank0_hooks if dist.is_main else None
    if not dist.is_main:
        # A worker's shutdown reaches rank 0, which checkpoints and stops the whole group at
        # the next step; a SIGTERM sent to every process (systemd, a container's init) must
        # not kill the others first, or the hand-over would read as a failed rank.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return train(
        config,
        run_dir,
        hooks,
        dataset=dataset,
        data_dirs=data_dirs,
        allow_download=allow_download,
        dist=dist,
    )


@contextlib.contextmanager
def _may_start_children() -> Iterator[None]:
    """Let Celery's pool process start the ranks with the standard library's multiprocessing.

    billiard (Celery's fork of it) installs its own process object as the current one: marked
    daemonic, which multiprocessing refuses to start children from lest they outlive it, and
    with an authkey of billiard's own type, which refuses to be pickled for a forkserver. The
    ranks cannot outlive this process (launch stops them before it returns, and each is
    killed when the forkserver that forked it goes, which goes with this process), so for
    the launch the flag is dropped and the key is a standard one with the same bytes.
    """
    config = multiprocessing.process.current_process()._config  # type: ignore[attr-defined]
    saved = {k: config[k] for k in ("daemon", "authkey") if k in config}
    config.pop("daemon", None)
    if "authkey" in saved:
        standard = multiprocessing.process.AuthenticationString  # type: ignore[attr-defined]
        config["authkey"] = standard(bytes(saved["authkey"]))
    try:
        yield
    finally:
        config.update(saved)


def train_group(
    config: Any,
    run_dir: Path,
    hooks: TrainHooks,
    *,
    dataset: Any,
    data_dirs: Sequence[Path],
    allow_download: bool,
    timeout_s: float,
) -> TrainResult:
    """Train ``config`` on ``config.devices`` ranks, rank 0 here with ``hooks``.

    ``gan_core.launch.RankFailed`` when another rank dies or a collective waits past
    ``timeout_s``; whatever rank 0's own training raises (HandBack, LeaseLost, a divergence)
    passes through, and the other ranks are stopped.
    """
    import torch

    from gan_core.launch import launch

    global _rank0_hooks
    device = resolve_device(config.device).type
    # CPU ranks share this worker's cores; a GPU rank keeps its process's threads
    threads = max(1, torch.get_num_threads() // config.devices) if device == "cpu" else None
    _rank0_hooks = hooks
    try:
        with _may_start_children():
            return launch(
                config.devices,
                _rank,
                config,
                Path(run_dir),
                dataset,
                list(data_dirs),
                allow_download,
                device=device,
                timeout_s=timeout_s,
                threads=threads,
            )
    finally:
        _rank0_hooks = None
