"""What each rank runs in the data-parallel tests (tests/gan_core/test_distributed*.py).

A module of the ``tests`` package, so that the child processes gan_core.launch starts can
import these functions by name. Every rank writes what it ended with (G, D, EMA G, their
BatchNorm buffers, adaptive p) to ``RUN_DIR/rank{r}.safetensors`` and its result to
``RUN_DIR/rank{r}.json`` (a list: a resumed run adds to it), for the test to compare across ranks and runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gan_core import training
from gan_core.config import TrainConfig
from gan_core.data import ImageTensorDataset, load_dataset
from gan_core.distributed import DistContext
from gan_core.steps import GANStep
from gan_core.training import TrainHooks, train
from tests.tiny import tiny

# fp32: "auto" is bf16 on a CPU with native bf16, whose rounding would swamp the comparison
TINY = tiny(steps=12, checkpoint_every=6, device="cpu", precision="fp32")
# Two ranks against one process: the same maths summed in another order (per-rank means
# averaged, BatchNorm statistics from sums) drifts by float rounding only, until GAN training
# amplifies it. Measured 6-8e-7 after 12 steps on CPUs with AVX-512; on an AVX2-only EPYC at
# one thread the DCGAN's was 1.4e-6 at step 6 and 5e-3 at 12 (0.1 after 100 steps elsewhere),
# so the tests compare one process with two ranks at step 6.
TOLERANCE = 1e-5  # largest |difference| of any weight, scaled by max(1, |weight|)


@functools.cache
def shapes16() -> ImageTensorDataset:
    """The tests' 256 procedural 16 px images, loaded once per process."""
    return load_dataset("shapes", image_size=16, max_items=256)


def nets_of(state: Any) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of a TrainState's G, D and EMA G, and adaptive p."""
    out = {f"G.{k}": v for k, v in state.G.state_dict().items()}
    out |= {f"D.{k}": v for k, v in state.D.state_dict().items()}
    if state.ema is not None:
        out |= {f"G_ema.{k}": v for k, v in state.ema.model.state_dict().items()}
    if state.ada is not None:
        out |= {f"ada.{k}": v for k, v in state.ada.state_dict().items()}
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


@contextlib.contextmanager
def captured_states() -> Iterator[list[Any]]:
    """The TrainStates train() hands to its loop, recorded as it goes (the loop runs as is)."""
    states: list[Any] = []
    loop = training._loop

    def recording(kind: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        states.append(state)
        return loop(kind, state, *args, **kwargs)

    training._loop = recording
    try:
        yield states
    finally:
        training._loop = loop


def stop_hooks(stop_at: int | None, seen: list[int]) -> TrainHooks:
    """Record every step reported; with stop_at, ask to stop once it was reported."""
    return TrainHooks(
        on_progress=lambda p: seen.append(p.step),
        should_stop=(lambda: bool(seen) and seen[-1] >= stop_at) if stop_at else None,
        progress_interval=0,
    )


def train_runs(dist: DistContext | None, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run {"config": fields, "run_dir": path, "stop_at": step or None} trained in turn
    as this rank (config.devices is the group's size); rank 0's results come back."""
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    results = []
    for run in runs:
        config = TrainConfig(**(run["config"] | {"devices": world}))
        seen: list[int] = []
        with captured_states() as states:
            result = train(
                config,
                run["run_dir"],
                stop_hooks(run.get("stop_at"), seen),
                dataset=shapes16(),
                dist=dist,
            )
        out = Path(run["run_dir"])
        save_file(nets_of(states[-1]), out / f"rank{rank}.safetensors")
        summary = {
            "status": result.status,
            "step": result.step,
            "checkpoint": str(result.checkpoint),
            "seen": seen,
        }
        log = out / f"rank{rank}.json"  # every run in this directory, in order
        done = json.loads(log.read_text()) if log.exists() else []
        log.write_text(json.dumps([*done, summary]))
        results.append(summary)
    return results


def fail_at_step(
    dist: DistContext | None, run: dict[str, Any], victim: int, step: int, how: str
) -> None:
    """train_runs([run]), but rank ``victim``, as it starts step ``step``, SIGKILLs itself
    (how "kill") or sleeps for ten minutes (how "stall": far past any test's timeout, so
    only the collective timeout can end the run, and the launcher then kills the sleeper)."""
    assert dist is not None
    if dist.rank == victim:
        one_step = GANStep.step

        def step_or_die(self: GANStep) -> torch.Tensor:
            if self.state.step + 1 == step and how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.state.step + 1 == step and how == "stall":
                time.sleep(600)
            return one_step(self)

        GANStep.step = step_or_die  # in a child process, which ends here: no undo
    train_runs(dist, [run])


def different(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors that are not bit-identical (a and b name the same ones)."""
    assert sorted(a) == sorted(b)
    return [k for k in a if not torch.equal(a[k], b[k])]


def worst_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest |a - b| over every floating tensor, relative to max(1, |a|)."""
    gaps = [
        float(((a[k] - b[k]).abs() / a[k].abs().clamp_min(1.0)).max())
        for k in a
        if a[k].is_floating_point() and a[k].numel()
    ]
    return max(gaps)


def at_step(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """The weights and buffers of G, D and the EMA G in run_dir's checkpoint at ``step``."""
    from gan_core.checkpoint import checkpoint_root, load_checkpoint, step_dir_name

    _, gen, state = load_checkpoint(checkpoint_root(run_dir) / step_dir_name(step))
    return {k: v for k, v in (gen | state).items() if k.startswith(("G.", "D.", "G_ema."))}


def nets(run_dir: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    """What rank ``rank`` of the run in run_dir ended with (train_runs wrote it)."""
    return load_file(run_dir / f"rank{rank}.safetensors")


def nan_on_rank(dist: DistContext | None, run: dict[str, Any], victim: int, step: int) -> None:
    """train_runs([run]), with rank ``victim``'s D loss NaN from step ``step`` on."""
    assert dist is not None
    if dist.rank == victim:
        import pytest

        from tests.nan_loss import nan_d_loss_from

        nan_d_loss_from(pytest.MonkeyPatch(), step)  # a child process, which ends here
    train_runs(dist, [run])


def train_in_own_dirs(dist: DistContext | None, base: str) -> None:
    """train_runs with each rank's run_dir its own, base/r<rank> (as local --out dirs on
    several hosts)."""
    rank = dist.rank if dist is not None else 0
    train_runs(dist, [{"config": TINY, "run_dir": f"{base}/r{rank}"}])


def slow_rank_0(dist: DistContext | None, run_dir: str, nap_s: float) -> dict[str, Any]:
    """TINY for 4 steps, checkpoints at 2 and 4, with rank 0's on_start and on_checkpoint
    each sleeping ``nap_s`` (as the service's preparing a scorer and scoring do)."""
    assert dist is not None

    def nap(*_: Any) -> None:
        time.sleep(nap_s)

    config = TrainConfig(**(TINY | {"devices": dist.world, "steps": 4, "checkpoint_every": 2}))
    hooks = TrainHooks(on_start=nap, on_checkpoint=nap)
    result = train(config, run_dir, hooks, dataset=shapes16(), dist=dist)
    return {"status": result.status, "step": result.step}
