"""Data-parallel training throughput on this machine: one process against ranks of
gan_core.launch, and what the collectives cost per step.

Issue 20's figures. The same config (same global ``batch_size``, same steps, same seed) is
trained through ``gan_core.training.train`` three ways, round by round, interleaved (the order
rotates every round, so load drifts hit every variant alike):

  single    train(config) in this process, dist=None, ``--threads`` torch threads (2)
  launch1   gan_core.launch.launch(1, ...): one rank, which is fn(None) in this process, so it
            should equal ``single`` (the launcher's own cost; threads stay ``--threads``)
  launch2   gan_core.launch.launch(2, ..., threads=--threads // 2): two ranks, each training
            half of every batch, gradients averaged by one all_reduce per update

for each model (``--models``):

  dcgan28   the default recipe's DCGAN (TrainConfig defaults: width 32, batch 64, EMA) at 28 px
            on Fashion-MNIST (/usr/share/datasets/fashion-mnist), else on procedural 'shapes'
  dcgan64   the DCGAN at 64 px, width 64, batch 64 on 'shapes' (4,096 images): 10.8M
            parameters (G + D) against dcgan28's 1.0M, but far more compute per step, so the
            collectives weigh less (in a smoke run on a loaded box, ~10% of a two-rank step
            against ~50% at dcgan28)

Only steady state is timed: with ``progress_interval=0`` rank 0 reports every step (each
report flushes the losses, a device sync), and the time from the report at step ``--warmup``
to the one at the last step is divided into the images consumed. The final checkpoint is
written after the last report and is not timed. The headline is the median over rounds of the
per-round ratio variant/single; every round's figure is kept.

Communication per step (launch2): every rank trains with a DistContext subclass that times
``average_gradients`` (flatten + all_reduce + copy back, once per D and G update) and
``share_step`` (the per-step losses/stop all_reduce and its one host sync), and a wrapper of
torch.distributed.all_reduce in each rank's process (restored afterwards) times every
collective, sorted by who called it: gradients, share_step, or other (sync BatchNorm's
all_reduces, one per BatchNorm layer in every forward and backward pass; adaptive p's sums,
when the run augments adaptively). A collective's time on a rank includes waiting for the
slower rank to arrive, so each rank's figures are reported; the smaller is the better
estimate of the transfer itself. The engine runs unchanged.

    .venv/bin/python benchmarks/distributed_throughput.py --steps 20 --repeats 3 \\
        --out benchmarks/results/distributed_throughput.json
        # ~15 min on 2 quiet cores, most of it dcgan64 (a bf16 step there took 9 s alone and
        # 5.6 s on two ranks on a loaded 2-core box: 7.2 and 11.5 images/s)
    .venv/bin/python benchmarks/distributed_throughput.py --report \\
        benchmarks/results/distributed_throughput.json          # the markdown table
    .venv/bin/python benchmarks/distributed_throughput.py --steps 6 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere without installing
    sys.path.insert(0, str(REPO))

# The OpenMP policy `ganforge` sets for itself (app/cli.py): a spinning rank would steal
# the other rank's core on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.distributed as torch_dist  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from gan_core.config import TrainConfig  # noqa: E402
from gan_core.data import DatasetError, ImageTensorDataset, load_dataset  # noqa: E402
from gan_core.distributed import DistContext  # noqa: E402
from gan_core.launch import launch  # noqa: E402
from gan_core.training import TrainHooks, train  # noqa: E402

VARIANTS = ("single", "launch1", "launch2")
MODELS: dict[str, dict[str, Any]] = {
    "dcgan28": {"dataset": "fashion-mnist", "image_size": 28},
    "dcgan64": {"dataset": "shapes", "image_size": 64, "g_width": 64, "d_width": 64},
}
SHAPES_ITEMS = 4096  # procedural images drawn for a shapes model (loading 20,000 takes seconds)


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class TimedDist(DistContext):
    """A DistContext that adds up the seconds spent in its collectives (the engine calls it
    as it calls any DistContext); ``marks`` holds the running totals after every step."""

    clock: dict[str, Any] = field(default_factory=dict, compare=False)
    marks: list[dict[str, float]] = field(default_factory=list, compare=False)

    @contextlib.contextmanager
    def _timing(self, what: str) -> Iterator[None]:
        self.clock["in"] = what  # the wrapped all_reduce files its time under this
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.clock[what] = self.clock.get(what, 0.0) + time.perf_counter() - t0
            self.clock["in"] = "other"

    def average_gradients(self, module: nn.Module) -> None:
        with self._timing("grads"):
            super().average_gradients(module)

    def share_step(self, losses: Tensor, stop: bool) -> tuple[list[float], bool]:
        with self._timing("share"):
            out = super().share_step(losses, stop)
        self.marks.append({k: v for k, v in self.clock.items() if k != "in"})
        return out


@contextlib.contextmanager
def timed_all_reduce(dist: TimedDist) -> Iterator[None]:
    """torch.distributed.all_reduce timed in this process (seconds and calls per caller)."""
    original, clock = torch_dist.all_reduce, dist.clock
    clock["in"] = "other"

    def all_reduce(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            key = f"all_reduce_{clock['in']}"
            clock[key] = clock.get(key, 0.0) + time.perf_counter() - t0
            clock[f"calls_{clock['in']}"] = clock.get(f"calls_{clock['in']}", 0) + 1

    torch_dist.all_reduce = all_reduce
    try:
        yield
    finally:
        torch_dist.all_reduce = original


# ----------------------------------------------------------------------------- one run


@functools.cache
def model_data(model: str, seed: int) -> ImageTensorDataset:
    """A model's training images, loaded once per process (every rank loads its own)."""
    spec = MODELS[model]
    if spec["dataset"] == "fashion-mnist":
        try:
            return load_dataset("fashion-mnist", image_size=spec["image_size"], seed=seed)
        except DatasetError:
            pass  # not installed here: the procedural set, as train_throughput.py uses
    return load_dataset("shapes", image_size=spec["image_size"], max_items=SHAPES_ITEMS, seed=seed)


def model_config(model: str, args: argparse.Namespace, devices: int) -> TrainConfig:
    """The model's config: its fields, else the defaults; no checkpoint before the end."""
    data = model_data(model, args.seed)
    spec = {**MODELS[model], "dataset": data.info.name}  # shapes where fashion-mnist is missing
    steps = args.warmup + args.steps
    return TrainConfig(
        **spec,
        steps=steps,
        seed=args.seed,
        precision=args.precision,
        checkpoint_every=steps,
        device="cpu",
        devices=devices,
    )


def train_rank(
    dist: DistContext | None, model: str, args: argparse.Namespace, run_dir: str
) -> dict:
    """One rank (or the single process): trains and returns its step marks and its
    collectives' running totals; a rank other than 0 writes them to run_dir/rank{r}.json."""
    world = dist.world if dist is not None else 1
    config = model_config(model, args, world)
    timed = TimedDist(dist.rank, dist.world, dist.group) if dist is not None else None
    marks: list[tuple[int, float]] = []
    hooks = TrainHooks(
        on_progress=lambda p: marks.append((p.step, time.perf_counter())), progress_interval=0.0
    )
    timer = timed_all_reduce(timed) if timed is not None else contextlib.nullcontext()
    with timer:
        result = train(
            config, run_dir, hooks, dataset=model_data(model, args.seed), resume=False, dist=timed
        )
    assert result.status == "succeeded" and result.step == config.steps, result
    out = {
        "rank": timed.rank if timed is not None else 0,
        "threads": torch.get_num_threads(),
        "precision": result.config.precision,
        "dataset": result.config.dataset,
        "marks": marks,
        "comm": timed.marks if timed is not None else [],
    }
    if timed is not None and not timed.is_main:
        Path(run_dir, f"rank{timed.rank}.json").write_text(json.dumps(out))
    return out


def steady(rank0: dict, config: TrainConfig, warmup: int) -> dict:
    """images/s between the reports at step warmup and at the last step."""
    by_step = dict(rank0["marks"])
    if warmup not in by_step or config.steps not in by_step:
        raise RuntimeError(f"no report at step {warmup} or {config.steps}: {rank0['marks']}")
    n = config.steps - warmup
    dt = by_step[config.steps] - by_step[warmup]
    return {"images_per_sec": n * config.batch_size * config.d_steps / dt, "seconds": dt}


def comm_per_step(rank: dict, warmup: int) -> dict:
    """Milliseconds per steady step in each kind of collective (and all_reduce calls)."""
    marks = rank["comm"]
    first, last = marks[warmup - 1], marks[-1]
    n = len(marks) - warmup
    out = {}
    for key in sorted(set(first) | set(last)):
        delta = (last.get(key, 0.0) - first.get(key, 0.0)) / n
        out[key if key.startswith("calls") else f"{key}_ms"] = round(
            delta if key.startswith("calls") else delta * 1000, 3
        )
    return out


def run_variant(variant: str, model: str, args: argparse.Namespace) -> dict:
    """One timed training run of a variant; images/s (and, for launch2, collectives)."""
    world = 2 if variant == "launch2" else 1
    config = model_config(model, args, world)
    with tempfile.TemporaryDirectory(prefix="ganforge-dist-bench-") as run_dir:
        t0 = time.perf_counter()
        if variant == "single":
            rank0 = train_rank(None, model, args, run_dir)
        else:
            threads = max(1, args.threads // world)
            rank0 = launch(world, train_rank, model, args, run_dir, threads=threads)
        wall = time.perf_counter() - t0
        ranks = [rank0] + [
            json.loads(Path(run_dir, f"rank{r}.json").read_text()) for r in range(1, world)
        ]
    row = {**steady(rank0, config, args.warmup), "wall_seconds": round(wall, 2)}
    row["threads_per_rank"] = rank0["threads"]
    row["precision"], row["dataset"] = rank0["precision"], rank0["dataset"]
    if world > 1:
        row["comm_per_step"] = [comm_per_step(r, args.warmup) for r in ranks]
    return row


# ----------------------------------------------------------------------------- the study


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in models if m not in MODELS]:
        raise SystemExit(f"--models: unknown {unknown}; known: {list(MODELS)}")
    out: dict = {
        "benchmark": "distributed_throughput",
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "threads": args.threads,
        "seed": args.seed,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "models": {m: {"config": {}, "rounds": []} for m in models},
    }
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for model in models:
            entry = out["models"][model]
            entry["config"] = model_config(model, args, 1).model_dump(mode="json")
            results = {v: run_variant(v, model, args) for v in order}
            for v in order:
                res = results[v]
                res["ratio"] = round(res["images_per_sec"] / results["single"]["images_per_sec"], 3)
                print(f"round {r + 1} {model:<8} {v:<8} " + fmt(res), flush=True)
            entry["rounds"].append({v: results[v] for v in VARIANTS})
            args.out.write_text(json.dumps(out, indent=2) + "\n")  # a crash keeps what ran
    for model in models:
        out["models"][model]["summary"] = summarize(out["models"][model]["rounds"])
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def summarize(rounds: list[dict]) -> dict:
    """Per variant: median and every round's images/s and ratio to single; launch2's
    collectives per step, median over rounds per rank."""
    out: dict = {}
    for v in VARIANTS:
        ips = [r[v]["images_per_sec"] for r in rounds]
        ratios = [r[v]["ratio"] for r in rounds]
        out[v] = {
            "images_per_sec_median": round(statistics.median(ips), 1),
            "images_per_sec_all": [round(x, 1) for x in ips],
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_all": ratios,
        }
    comm = [r["launch2"]["comm_per_step"] for r in rounds]
    out["launch2"]["comm_per_step_median"] = [
        {k: round(statistics.median(c[rank][k] for c in comm), 3) for k in comm[0][rank]}
        for rank in range(len(comm[0]))
    ]
    return out


def fmt(res: dict) -> str:
    line = f"{res['images_per_sec']:8.1f} img/s  x{res['ratio']:.3f} of single"
    for rank, c in enumerate(res.get("comm_per_step", [])):
        ms = {k: c.get(f"all_reduce_{k}_ms", 0.0) for k in ("grads", "share", "other")}
        line += f"  | rank {rank} collectives ms/step: " + " ".join(
            f"{k} {v:.1f}" for k, v in ms.items()
        )
    return line


def report(paths: list[Path]) -> str:
    """A markdown table of runs: images/s and ratio per variant, collectives per step."""
    lines = [
        "| model | data | variant | images/s median (all) | x single median (all) "
        "| all_reduce ms/step, rank 0 / rank 1: grads, share_step, other (calls) |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        run_ = json.loads(path.read_text())
        for model, entry in run_["models"].items():
            summ = entry.get("summary") or summarize(entry["rounds"])
            data = entry["rounds"][0]["single"]["dataset"]
            for v in VARIANTS:
                s = summ[v]
                ips = ", ".join(f"{x:.0f}" for x in s["images_per_sec_all"])
                ratios = ", ".join(f"{x:.2f}" for x in s["ratio_all"])
                comm = "-"
                if v == "launch2":
                    comm = " / ".join(
                        ", ".join(
                            f"{c.get(f'all_reduce_{k}_ms', 0.0):.1f}"
                            for k in ("grads", "share", "other")
                        )
                        + f" ({sum(int(c.get(f'calls_{k}', 0)) for k in ('grads', 'share', 'other'))})"
                        for c in s["comm_per_step_median"]
                    )
                lines.append(
                    f"| {model} | {data} | {v} | {s['images_per_sec_median']:.0f} ({ips}) "
                    f"| {s['ratio_median']:.2f} ({ratios}) | {comm} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run, after warm-up")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every variant")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in all (split by ranks)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated of {list(MODELS)}")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["fp32", "bf16", "auto"],
        help="every run's precision (auto, the default: what a job gets on this machine)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/distributed_throughput.json"
    )
    ap.add_argument(
        "--report", type=Path, nargs="+", help="print a markdown table of these results; no run"
    )
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps: at least 1 each")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run(args)
    print(report([args.out]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    # run through the package's name, so that the ranks gan_core.launch starts can import
    # train_rank by name (a child cannot import this file's __main__)
    from benchmarks import distributed_throughput

    raise SystemExit(distributed_throughput.main())
