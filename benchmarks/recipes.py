"""The recipe study: FD (quality.py's scorer) against wall time for each recipe tried.

Each recipe in RECIPES (overrides of the default config) and quality.py's plain loop train
for ``--steps`` G steps, then again for as many steps as fit in the time the default took
(steps x t_default / t_recipe, from the same run), each seed with its own scorer:

    .venv/bin/python benchmarks/recipes.py --width 32 --seeds 0,1 \\
        --recipes plain,default,rpgan_r1r2,d_steps2 --out benchmarks/results/recipes-w32.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere without installing
    sys.path.insert(0, str(REPO))

from benchmarks.quality import (  # noqa: E402
    BATCH,
    DATASET,
    IMAGE_SIZE,
    fit_scorer,
    sample_eval,
    train_default,
    train_plain,
)
from gan_core.checkpoint import load_generator  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.data import ImageTensorDataset, load_dataset  # noqa: E402

# Recipes tried against the default, each as overrides of the default config. The default
# itself is hinge, Adam 8e-4 (0.5, 0.999), EMA with warm-up, BatchNorm in G and D.
RECIPES: dict[str, dict] = {
    "default": {},
    # R3GAN's objective (Huang et al. 2024): relativistic pairing loss with zero-centred R1 and
    # R2 (D loses BatchNorm), lazily every 4th D update (StyleGAN2) to keep its cost down
    "rpgan_r1r2": {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1, "reg_every": 4},
    # a stronger discriminator: two D updates per G update
    "d_steps2": {"d_steps": 2},
}


def train_recipe(
    name: str, steps: int, seed: int, train_set: ImageTensorDataset, width: dict, n: int, scorer
) -> dict:
    """Train one recipe (or the plain loop) for steps and score it: FD, classes, seconds."""
    if name == "plain":
        G, secs = train_plain(steps, seed, train_set, width.get("g_width"))
        overrides: dict = {}
    else:
        overrides = RECIPES[name]
        with tempfile.TemporaryDirectory(prefix="ganforge-recipe-") as tmp:
            ckpt_dir, _, secs = train_default(
                steps, seed, Path(tmp) / name, train_set, **width, **overrides
            )
            G = load_generator(ckpt_dir, ema=True)  # the service's sampling path
    score = scorer.score(sample_eval(G, n, seed)).as_dict()
    return {"steps": steps, "train_seconds": round(secs, 1), "overrides": overrides, **score}


def study(args: argparse.Namespace) -> dict:
    """FD against wall time for each recipe at equal steps and at equal seconds, per seed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else 3000
    n = args.samples if args.samples is not None else 10_000
    width = {} if args.width is None else {"g_width": args.width, "d_width": args.width}
    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in names if r != "plain" and r not in RECIPES]
    if unknown or "default" not in names:
        raise SystemExit(
            f"--recipes: {unknown or 'default is needed'}; known: plain, {list(RECIPES)}"
        )
    seeds = [int(x) for x in args.seeds.split(",")]
    out: dict = {
        "benchmark": "quality-recipes",
        "dataset": DATASET,
        "steps": steps,
        "width": args.width or TrainConfig.model_fields["g_width"].default,
        "samples": n,
        "recipes": {
            r: ("bare loop: BCE, Adam 2e-4, no EMA" if r == "plain" else RECIPES[r]) for r in names
        },
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "seeds": {},
    }
    for seed in seeds:
        train_set = load_dataset(DATASET, image_size=IMAGE_SIZE, seed=seed)
        scorer, clf_info = fit_scorer(train_set, seed, epochs=2)
        rows: dict[str, dict] = {}
        out["seeds"][str(seed)] = {"scorer": clf_info, "recipes": rows}
        order = ["default"] + [r for r in names if r != "default"]  # the default sets the clock
        for name in order:
            rows[name] = {
                "equal_steps": train_recipe(name, steps, seed, train_set, width, n, scorer)
            }
            print(
                f"seed {seed} {name:<12} {steps} steps: {fmt(rows[name]['equal_steps'])}",
                flush=True,
            )
            args.out.write_text(json.dumps(out, indent=2) + "\n")  # a crash keeps what ran
        budget = rows["default"]["equal_steps"]["train_seconds"]
        for name in order[1:]:
            per_step = rows[name]["equal_steps"]["train_seconds"] / steps
            fit = max(1, round(budget / per_step))
            rows[name]["equal_seconds"] = train_recipe(name, fit, seed, train_set, width, n, scorer)
            print(
                f"seed {seed} {name:<12} {budget:.0f} s: {fmt(rows[name]['equal_seconds'])}",
                flush=True,
            )
            args.out.write_text(json.dumps(out, indent=2) + "\n")
        rows["default"]["equal_seconds"] = rows["default"]["equal_steps"]  # the same run
    return out


def fmt(r: dict) -> str:
    return f"FD {r['fd']:.3f}, {r['classes_covered']}/{r['num_classes']} classes, {r['steps']} steps in {r['train_seconds']:.0f} s"


def print_study(out: dict) -> None:
    print()
    print(
        f"Fashion-MNIST 28px, width {out['width']}, batch {BATCH}, {out['samples']} samples; "
        f"equal steps = {out['steps']} G steps, equal seconds = the default's training time"
    )
    head = (
        f"{'recipe':<12} {'seed':>4} | {'FD':>7} {'time':>7} | {'FD':>7} {'steps':>6} {'time':>7}"
    )
    print(f"{'':<17} | {'equal steps':^15} | {'equal seconds':^22}")
    print(head)
    for seed, s in out["seeds"].items():
        for name, r in s["recipes"].items():
            a, b = r["equal_steps"], r.get("equal_seconds")
            right = f"{b['fd']:>7.3f} {b['steps']:>6} {b['train_seconds']:>6.0f}s" if b else ""
            print(f"{name:<12} {seed:>4} | {a['fd']:>7.3f} {a['train_seconds']:>6.0f}s | {right}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="G steps at equal steps (3000)")
    ap.add_argument("--seeds", default="0,1", help="seeds, each with its own scorer (0,1)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--samples", type=int, default=None, help="generated images scored (10000)")
    ap.add_argument("--width", type=int, default=None, help="g_width = d_width for every recipe")
    ap.add_argument(
        "--recipes",
        default="plain,default,rpgan_r1r2,d_steps2",
        help=f"comma-separated of plain, {', '.join(RECIPES)} (default needed)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/recipes.json")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = study(args)
    print_study(out)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
