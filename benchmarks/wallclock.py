"""FD against wall time: every recipe trains for the same seconds; scored at equal seconds and
at equal steps.

Issue 19's study. Each recipe (recipes.py's RECIPES: overrides of the default config) trains
through gan_core.training.train on Fashion-MNIST for ``--seconds`` of training time, then a
should_stop hook ends it, as a cancel would. It keeps a checkpoint every ``--every`` steps.
The time of a checkpoint leaves out the pauses checkpoints make (the write, and the EMA G's
standing BatchNorm statistics: 2,048 samples, seconds at 64 px), which are this benchmark's
doing (a job writes one every 500 steps), so a fast recipe's many checkpoints do not count
against it. Nothing in a run depends on its step budget: the EMA warm-up follows the
steps done so far and the learning rate is constant, so the checkpoint at step k is exactly
what a k-step run would end with.

Then, per recipe, quality.py's scorer (a classifier trained on the whole training set, with
the test split as the reference) scores the EMA generator at:
- equal seconds: the newest checkpoint written by j/points of the budget (j = 1..points);
- equal steps: the steps the slowest recipe reached at those same times (multiples of
  ``--every``), for every recipe.

One process per seed, one thread each, side by side on a 2-core machine (issue 19's runs):

    for s in 0 1; do .venv/bin/python benchmarks/wallclock.py --seed $s --threads 1 \\
        --seconds 300 --recipes default,ada,resnet,resnet_small_data \\
        --out benchmarks/results/issue19-wallclock-full-seed$s.json & done; wait
    for s in 0 1; do .venv/bin/python benchmarks/wallclock.py --seed $s --threads 1 \\
        --seconds 300 --subset 1000 --recipes default,ada,resnet,resnet_small_data \\
        --out benchmarks/results/issue19-wallclock-1000-seed$s.json & done; wait

``--dataset shapes`` or ``--dataset folder`` trains at 64 px in colour instead, on
stability.py's data and scorer (_rgb_folder.py: the procedural set, or tinted garments read
as an uploaded folder of PNGs), scoring 2,000 generated images against 2,000 real ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere without installing
    sys.path.insert(0, str(REPO))

from benchmarks._rgb_folder import CHANNELS, REFERENCE, SIZE, rgb_data, rgb_scorer  # noqa: E402
from benchmarks.quality import DATASET, IMAGE_SIZE, default_config, fit_scorer, sample_eval  # noqa: E402
from benchmarks.recipes import RECIPES, subset  # noqa: E402
from gan_core.checkpoint import list_checkpoints, load_generator  # noqa: E402
from gan_core.data import ImageTensorDataset, load_dataset  # noqa: E402
from gan_core.training import TrainHooks, train  # noqa: E402

STEP_CAP = 1_000_000  # the run ends on time, never on steps


def train_for(
    name: str, seed: int, data: ImageTensorDataset, args: argparse.Namespace, run_dir: Path
) -> dict:
    """Train one recipe for args.seconds of training time; its checkpoints' (step, seconds)."""
    overrides = {
        **args.data_fields,
        **RECIPES[name],
        "precision": args.precision,
        "checkpoint_every": args.every,
        "keep_checkpoints": 1000,
    }
    marks: list[tuple[int, float]] = []
    writing = 0.0  # seconds spent writing checkpoints so far
    t0 = time.monotonic()

    def training_seconds() -> float:
        return time.monotonic() - t0 - writing

    def on_checkpoint(info) -> None:
        nonlocal writing
        writing += info.seconds
        marks.append((info.step, round(training_seconds(), 2)))

    hooks = TrainHooks(
        should_stop=lambda: training_seconds() >= args.seconds,
        on_checkpoint=on_checkpoint,
        progress_interval=0.25,
    )
    config = default_config(STEP_CAP, seed, **overrides)
    result = train(config, run_dir, hooks, dataset=data, resume=False)
    wall = time.monotonic() - t0
    if result.status != "canceled":
        raise RuntimeError(f"{name}: ended on steps, not on time: {result}")
    return {
        "overrides": overrides,
        "precision": result.config.precision,  # "auto" resolved
        "steps": result.step,
        "training_seconds": marks[-1][1],
        "wall_seconds": round(wall, 1),
        "checkpoint_write_seconds": round(writing, 1),
        "checkpoints": marks,
    }


def pick_by_time(marks: list[tuple[int, float]], t: float) -> int | None:
    """The newest checkpoint's step written by training time t (None: none yet)."""
    done = [step for step, secs in marks if secs <= t]
    return done[-1] if done else None


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if unknown := [r for r in names if r not in RECIPES]:
        raise SystemExit(f"--recipes: unknown {unknown}; known: {list(RECIPES)}")
    if args.dataset == "fashion":
        full = load_dataset(DATASET, image_size=IMAGE_SIZE, seed=args.seed)
        # the scorer learns all of the training set, also when the recipes train on a subset
        scorer, clf_info = fit_scorer(full, args.seed, epochs=2)
        args.data_fields = {}
    else:  # 64 px RGB
        full, reference = rgb_data(args.dataset, args.seed)
        scorer = rgb_scorer(full, reference, args.seed)
        clf_info = {"seed": args.seed, "reference": f"{REFERENCE} real images", "epochs": 2}
        # the name only (train gets the images themselves)
        args.data_fields = {"dataset": "shapes", "image_size": SIZE, "channels": CHANNELS}
    if args.samples is None:
        args.samples = 10_000 if args.dataset == "fashion" else 2_000
    data = subset(full, args.subset, args.seed) if args.subset else full
    out: dict = {
        "benchmark": "wallclock",
        "dataset": DATASET if args.dataset == "fashion" else args.dataset,
        "image_size": IMAGE_SIZE if args.dataset == "fashion" else SIZE,
        "train_images": len(data),
        "seed": args.seed,
        "seconds": args.seconds,
        "every": args.every,
        "points": args.points,
        "samples": args.samples,
        "scorer": clf_info,
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu": _cpu_name(),
        },
        "recipes": {},
    }
    times = [args.seconds * j / args.points for j in range(1, args.points + 1)]
    with tempfile.TemporaryDirectory(prefix="ganforge-wallclock-") as tmp:
        for name in names:
            row = train_for(name, args.seed, data, args, Path(tmp) / name)
            out["recipes"][name] = row
            print(
                f"{name:<18} {row['steps']:>6} steps in {row['training_seconds']:.0f} s", flush=True
            )
        # equal steps: where the slowest recipe got to at each time point
        slowest = min(names, key=lambda r: out["recipes"][r]["steps"])
        slow_marks = out["recipes"][slowest]["checkpoints"]
        step_points = sorted(
            {
                s - s % args.every
                for t in times
                if (s := pick_by_time(slow_marks, t)) is not None and s >= args.every
            }
        )
        out["equal_steps_from"] = slowest
        for name in names:
            row = out["recipes"][name]
            by_step = {step: secs for step, secs in row["checkpoints"]}
            row["equal_seconds"] = [
                {"seconds": round(t, 1), "step": pick_by_time(row["checkpoints"], t)} for t in times
            ]
            row["equal_steps"] = [{"step": s, "seconds": by_step.get(s)} for s in step_points]
            wanted = {p["step"] for p in row["equal_seconds"] + row["equal_steps"]} - {None}
            fds = {}
            for path in list_checkpoints(Path(tmp) / name):
                step = int(path.name.rsplit("-", 1)[-1])
                if step in wanted:
                    G = load_generator(path, ema=True)  # the service's sampling path
                    fds[step] = round(scorer.score(sample_eval(G, args.samples, args.seed)).fd, 4)
            for p in row["equal_seconds"] + row["equal_steps"]:
                p["fd"] = fds.get(p["step"])
            print(f"{name:<18} " + fmt(row), flush=True)
            args.out.write_text(json.dumps(out, indent=2) + "\n")  # a crash keeps what ran
    return out


def fmt(row: dict) -> str:
    secs = "  ".join(f"{p['seconds']:.0f}s:{p['fd']}" for p in row["equal_seconds"])
    steps = "  ".join(f"{p['step']}:{p['fd']}" for p in row["equal_steps"])
    return f"FD at seconds {secs} | at steps {steps}"


def report(paths: list[Path]) -> str:
    """A markdown table of runs' FD at the last time point and at the largest shared step."""
    lines = [
        "| data | seed | recipe | steps in the budget | FD at equal seconds | FD at equal steps |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        run = json.loads(path.read_text())
        data = "all" if run["train_images"] >= 60_000 else f"{run['train_images']:,} images"
        if run.get("image_size", IMAGE_SIZE) != IMAGE_SIZE:
            data = f"{run['dataset']} {run['image_size']} px, {run['train_images']:,} images"
        for name, row in run["recipes"].items():
            last_t, last_s = row["equal_seconds"][-1], (row.get("equal_steps") or [{}])[-1]
            at_steps = f"{last_s['fd']} (step {last_s['step']})" if last_s.get("fd") else "-"
            lines.append(
                f"| {data} | {run['seed']} | {name} | {row['steps']} | {last_t['fd']} | {at_steps} |"
            )
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="the run's seed (and its scorer's)")
    ap.add_argument("--seconds", type=float, default=300.0, help="training seconds per recipe")
    ap.add_argument("--every", type=int, default=50, help="steps between checkpoints")
    ap.add_argument("--points", type=int, default=6, help="time points scored per recipe")
    ap.add_argument(
        "--samples", type=int, default=None, help="generated images scored (10,000; 2,000 at 64 px)"
    )
    ap.add_argument(
        "--dataset",
        default="fashion",
        choices=["fashion", "shapes", "folder"],
        help="Fashion-MNIST at 28 px, or 64 px RGB: procedural shapes or an uploaded folder",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument(
        "--subset", type=int, default=None, help="train on this many images (drawn by the seed)"
    )
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["fp32", "bf16", "auto"],
        help="every recipe's precision (auto, the default: what a job gets on this machine)",
    )
    ap.add_argument(
        "--recipes", default="default,resnet", help=f"comma-separated of {list(RECIPES)}"
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/wallclock.json")
    ap.add_argument(
        "--report", type=Path, nargs="+", help="print a markdown table of these results; no run"
    )
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run(args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
