"""Starting a process group for one run: ``launch(world, fn, ...)`` on this machine, or
``init_from_env()`` under ``torchrun`` (or any launcher that sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT).

``launch`` runs rank 0 in the calling process and ranks 1..N-1 as child processes (forked
from a forkserver that has torch imported, so a rank starts in a fraction of a second
rather than re-importing torch); they meet over TCP on 127.0.0.1 at a port the store picks.
Children die with their parent. A rank that dies (even by SIGKILL) closes its connections,
so the others' next collective fails at once and rank 0 raises ``RankFailed`` naming it; a
rank that stalls fails the others after the collective timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from gan_core.distributed import DistContext

__all__ = ["DEFAULT_TIMEOUT_S", "RankFailed", "init_from_env", "launch"]

DEFAULT_TIMEOUT_S = 300.0  # a collective that waits longer fails the group
HOST = "127.0.0.1"
T = TypeVar("T")


class RankFailed(RuntimeError):
    """A rank of the group died or failed, so the run could not go on."""


def _backend(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def init_from_env(
    *, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistContext | None:
    """Join the process group the environment describes (torchrun's RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK); None when it describes one process or none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    backend = _backend(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch_dist.init_process_group(
        backend, init_method="env://", timeout=timedelta(seconds=timeout_s)
    )
    return DistContext.current()


def _join(rank: int, world: int, port: int, backend: str, timeout_s: float) -> DistContext:
    timeout = timedelta(seconds=timeout_s)
    store = torch_dist.TCPStore(HOST, port, world, is_master=False, timeout=timeout)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    torch_dist.init_process_group(
        backend, store=store, rank=rank, world_size=world, timeout=timeout
    )
    ctx = DistContext.current()
    assert ctx is not None
    return ctx


def _die_with_parent() -> None:
    """SIGKILL this process when its parent goes (Linux; elsewhere the broken connections
    still end it at its next collective)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(
    rank: int,
    world: int,
    port: int,
    backend: str,
    timeout_s: float,
    threads: int | None,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
) -> None:
    _die_with_parent()
    if threads is not None:
        torch.set_num_threads(threads)
    ctx = _join(rank, world, port, backend, timeout_s)
    try:
        fn(ctx, *args, **kwargs)
    finally:
        with contextlib.suppress(Exception):
            torch_dist.destroy_process_group()


def _context() -> Any:
    """forkserver where there is one (a child forks from a process with torch imported),
    else spawn; never fork, which copies a parent's thread pools mid-use."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "gan_core.training"])
        return ctx
    return mp.get_context("spawn")


def _failures(procs: list[Any], wait_s: float) -> tuple[list[str], bool]:
    """Why each child rank failed (exited non-zero, or by a signal), waiting up to wait_s
    for each; and whether one was killed by a signal."""
    out, killed = [], False
    for rank, p in enumerate(procs, start=1):
        p.join(wait_s)
        code = p.exitcode
        if code is not None and code < 0:
            out.append(f"rank {rank} was killed by {signal.Signals(-code).name}")
            killed = True
        elif code:
            out.append(f"rank {rank} exited with status {code}")
    return out, killed


def launch(
    world: int,
    fn: Callable[..., T],
    *args: Any,
    device: str = "cpu",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads: int | None = None,
    **kwargs: Any,
) -> T:
    """``fn(dist, *args, **kwargs)`` on ``world`` ranks: rank 0 here, returning its result,
    ranks 1..world-1 in child processes (fn and its arguments must pickle). With world 1,
    fn(None, ...) runs here alone. ``threads``: torch threads per rank (None: unchanged).
    RankFailed when another rank dies or fails, or a collective times out."""
    if world < 1:
        raise ValueError(f"devices: must be at least 1, got {world}")
    if world == 1:
        return fn(None, *args, **kwargs)
    backend, timeout = _backend(device), timedelta(seconds=timeout_s)
    # the store's server, on a port it picks itself (no race for a "free" port)
    store = torch_dist.TCPStore(
        HOST, 0, world, is_master=True, timeout=timeout, wait_for_workers=False
    )
    ctx = _context()
    procs = [
        ctx.Process(
            target=_child,
            args=(rank, world, store.port, backend, timeout_s, threads, fn, args, kwargs),
            daemon=True,
        )
        for rank in range(1, world)
    ]
    for p in procs:
        p.start()
    saved_threads, grace_s = torch.get_num_threads(), 30.0
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(0)
        torch_dist.init_process_group(
            backend, store=store, rank=0, world_size=world, timeout=timeout
        )
        result = fn(DistContext.current(), *args, **kwargs)
    except Exception as exc:
        grace_s = 5.0  # the others have nothing left to do
        _raise_rank_failed(exc, procs, timeout_s)
        raise
    finally:
        torch.set_num_threads(saved_threads)
        with contextlib.suppress(Exception):
            torch_dist.destroy_process_group()
        for p in procs:
            p.join(grace_s)
            if p.is_alive():
                p.kill()
                p.join()
    failed, _ = _failures(procs, wait_s=0.0)
    if failed:
        raise RankFailed(f"rank 0 finished but {'; '.join(failed)}")
    return result


def _raise_rank_failed(exc: Exception, procs: list[Any], timeout_s: float) -> None:
    """RankFailed from exc when rank 0 failed because of the group (a rank that died makes
    the next collective fail at once: say which one, and how); else nothing."""
    communication = _is_communication_error(exc)
    failed, killed = _failures(procs, wait_s=5.0 if communication else 0.5)
    if failed and (communication or killed):
        raise RankFailed(f"the process group failed: {'; '.join(failed)}") from exc
    if communication:
        raise RankFailed(
            f"the process group failed with every rank alive: one stalled past the "
            f"{timeout_s:g} s collective timeout or lost its connection ({exc})"
        ) from exc


def _is_communication_error(exc: BaseException) -> bool:
    """An error of the group's communication (a peer gone, a timeout), not of the run."""
    if isinstance(exc, torch_dist.DistError):
        return True
    text = str(exc)
    return type(exc) is RuntimeError and any(  # gloo's transport errors are RuntimeErrors
        word in text for word in ("gloo", "Connection closed", "Timed out", "NCCL")
    )
