"""The recipe study: FD (quality.py's scorer) against wall time for each recipe tried.

Each recipe in RECIPES (overrides of the default config) and quality.py's plain loop train
for ``--steps`` G steps, then again for as many steps as fit in the time the default took
(steps x t_default / t_recipe, from the same run), each seed with its own scorer:

    .venv/bin/python benchmarks/recipes.py --width 32 --seeds 0,1 --curve \\
        --recipes default,betas_0.5 --out benchmarks/results/recipes-betas-w32.json

A screening run (one seed, equal steps only, every kept checkpoint scored), as the one behind
benchmarks/results/screening-bf16-w32-seed0.json:

    .venv/bin/python benchmarks/recipes.py --width 32 --seeds 0 --precision bf16 \\
        --no-equal-seconds --curve --out benchmarks/results/screening.json --recipes \\
        default,betas_0.5,betas_0.5_lr1.2e-3,betas_0.5_lr1.6e-3,betas_0.5_rampup0.03,betas_0_0.999,lr1.6e-3,ttur

The fp32 screening of learning-rate schedules, batch sizes and spectral norm (2026-12-04;
benchmarks/results/screening-fp32-w32-seed0-*.json) ran ``--width 32 --seeds 0
--no-equal-seconds --curve`` with ``--recipes default,cosine,linear_half,lr1.6e-3_cosine``
(stopped during the last) and ``--recipes batch32,batch16,batch32_lr5.7e-4,spectral_norm``.
Width against steps, at width 64 (the config's width until 2026-12-04; ``--width 64`` sets it
for every recipe but width32's own): can width 32 match it in half its time?

    .venv/bin/python benchmarks/recipes.py --width 64 --seeds 0,1 --curve --recipes default,width32 \
        --equal-seconds-for width32 --seconds-fraction 0.5 --out benchmarks/results/width-w64-vs-w32.json

The issue's baseline, the default of 2026-11 (width 64, betas (0.5, 0.999)), one seed a run:

    .venv/bin/python benchmarks/recipes.py --width 64 --seeds 0 --curve --no-equal-seconds \
        --recipes betas_0.5 --out benchmarks/results/width64-betas0.5-seed0.json

The default since then (width 32, 4,000 steps), as shipped; the old default's time on the same
machine; spectral norm's second seed:

    .venv/bin/python benchmarks/recipes.py --steps 4000 --seeds 0,1 --no-equal-seconds --curve \
        --recipes default --out benchmarks/results/default-w32-4000steps.json
    .venv/bin/python benchmarks/recipes.py --seeds 0 --no-equal-seconds --recipes old_default \
        --out benchmarks/results/old-default-seed0-timing.json
    .venv/bin/python benchmarks/recipes.py --seeds 1 --no-equal-seconds --curve \
        --recipes spectral_norm --out benchmarks/results/screening-fp32-w32-seed1-sn.json

Issue 19's study (the presets and adaptive augmentation, at equal steps and equal seconds),
on all of the training set and on a 1,000-image subset (the scorer always learns all of it):

    .venv/bin/python benchmarks/recipes.py --seeds 0,1 --recipes default,resnet,ada,resnet_small_data \
        --out benchmarks/results/issue19-full.json
    .venv/bin/python benchmarks/recipes.py --seeds 0,1 --subset 1000 \
        --recipes default,ada,resnet,resnet_small_data --out benchmarks/results/issue19-1000.json

(benchmarks/results/recipes-w32.json, ``--recipes plain,default,rpgan_r1r2,d_steps2``, was made
while the default still had Adam betas (0.5, 0.999): its ``default`` is today's ``betas_0.5``.)
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
from gan_core.checkpoint import list_checkpoints, load_generator  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.data import ImageTensorDataset, load_dataset  # noqa: E402

# Recipes tried against the default, each as overrides of the default config. The default
# itself is hinge, Adam 8e-4 (0.0, 0.99), EMA with warm-up, BatchNorm in G and D, width 32.
_DCGAN_BETAS = {"g_betas": (0.5, 0.999), "d_betas": (0.5, 0.999)}
RECIPES: dict[str, dict] = {
    "default": {},
    # the default until 2026-12: DCGAN's Adam momentum (Radford et al. 2016)
    "betas_0.5": _DCGAN_BETAS,
    # the whole default of 2026-11, the issue's baseline: DCGAN's momentum at width 64
    "old_default": _DCGAN_BETAS | {"g_width": 64, "d_width": 64},
    # screened on the old betas (one seed, bf16): faster rates, a shorter EMA half-life
    "betas_0.5_lr1.2e-3": {
        "g_betas": (0.5, 0.999),
        "d_betas": (0.5, 0.999),
        "g_lr": 1.2e-3,
        "d_lr": 1.2e-3,
    },
    "betas_0.5_lr1.6e-3": {
        "g_betas": (0.5, 0.999),
        "d_betas": (0.5, 0.999),
        "g_lr": 1.6e-3,
        "d_lr": 1.6e-3,
    },
    "betas_0.5_rampup0.03": {"g_betas": (0.5, 0.999), "d_betas": (0.5, 0.999), "ema_rampup": 0.03},
    # screened around the new betas: beta2 0.999, a faster rate, TTUR (Heusel et al. 2017)
    "betas_0_0.999": {"g_betas": (0.0, 0.999), "d_betas": (0.0, 0.999)},
    "lr1.6e-3": {"g_lr": 1.6e-3, "d_lr": 1.6e-3},
    "ttur": {"g_lr": 4e-4, "d_lr": 1.2e-3},
    # R3GAN's objective (Huang et al. 2024): relativistic pairing loss with zero-centred R1 and
    # R2 (D loses BatchNorm), lazily every 4th D update (StyleGAN2) to keep its cost down
    "rpgan_r1r2": {"loss": "rpgan", "r1_gamma": 0.1, "r2_gamma": 0.1, "reg_every": 4},
    # a stronger discriminator: two D updates per G update
    "d_steps2": {"d_steps": 2},
    # spectral normalisation in place of D's BatchNorm (SN-GAN, Miyato et al. 2018)
    "spectral_norm": {"spectral_norm": True},
    # width against steps: half of width 64 costs about a third per step on a CPU (width 32
    # is the default since 2026-12-04, so without --width this is the default)
    "width32": {"g_width": 32, "d_width": 32},
    # smaller batches: cheaper steps, so more updates in the same time (Adam rate kept, or
    # scaled by the square root of the batch ratio)
    "batch32": {"batch_size": 32},
    "batch32_lr5.7e-4": {"batch_size": 32, "g_lr": 5.7e-4, "d_lr": 5.7e-4},
    "batch16": {"batch_size": 16},
    # learning-rate decay to 0 over the run: over all of it, or over its second half
    "cosine": {"lr_schedule": "cosine"},
    "linear_half": {"lr_schedule": "linear", "lr_decay_start": 0.5},
    "lr1.6e-3_cosine": {"g_lr": 1.6e-3, "d_lr": 1.6e-3, "lr_schedule": "cosine"},
    # issue 19: the presets (gan_core.presets), and the default with adaptive augmentation
    "resnet": {"preset": "resnet"},
    "resnet_small_data": {"preset": "resnet-small-data"},
    "ada": {"augment_p": "adaptive"},
}


def train_recipe(
    name: str,
    steps: int,
    seed: int,
    train_set: ImageTensorDataset,
    width: dict,
    n: int,
    scorer,
    curve: bool = False,
    extra: dict | None = None,
) -> dict:
    """Train one recipe (or the plain loop) for steps and score it: FD, classes, seconds.

    With ``curve``, the run keeps every checkpoint and the earlier ones are scored too (FD by
    step), which shows how many steps a recipe needs to reach another's final FD.
    """
    fd_by_step: dict[str, float] = {}
    extra = extra or {}
    if name == "plain":
        G, secs = train_plain(steps, seed, train_set, width.get("g_width"))
        overrides: dict = {}
    else:
        overrides = {**RECIPES[name], **extra}
        with tempfile.TemporaryDirectory(prefix="ganforge-recipe-") as tmp:
            run_dir = Path(tmp) / name
            keep = {"keep_checkpoints": 1000} if curve else {}  # every checkpoint is scored
            ckpt_dir, _, secs = train_default(
                steps, seed, run_dir, train_set, **(width | overrides | keep)
            )
            G = load_generator(ckpt_dir, ema=True)  # the service's sampling path
            for earlier in list_checkpoints(run_dir)[:-1] if curve else []:
                G_then = load_generator(earlier, ema=True)
                step = int(earlier.name.rsplit("-", 1)[-1])
                fd_by_step[str(step)] = round(scorer.score(sample_eval(G_then, n, seed)).fd, 4)
    score = scorer.score(sample_eval(G, n, seed)).as_dict()
    if fd_by_step:
        score["fd_by_step"] = {**fd_by_step, str(steps): round(score["fd"], 4)}
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
    if unknown or ("default" not in names and args.equal_seconds):
        raise SystemExit(
            f"--recipes: {unknown or 'default sets the clock'}; known: plain, {list(RECIPES)}"
        )
    # explicit: the config's default is "auto" (bf16 on a CPU with native bf16) since issue 19
    extra = {"precision": args.precision}
    if args.precision != "fp32" and "plain" in names:
        raise SystemExit("--precision: the plain loop is bare fp32 PyTorch; leave it out")
    seeds = [int(x) for x in args.seeds.split(",")]
    out: dict = {
        "benchmark": "quality-recipes",
        "dataset": DATASET,
        "steps": steps,
        "width": args.width or TrainConfig.model_fields["g_width"].default,
        "samples": n,
        "train_images": args.subset or "all",
        "precision": args.precision,
        "seconds_fraction": args.seconds_fraction,  # of the default's time, at equal seconds
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
        full_set = load_dataset(DATASET, image_size=IMAGE_SIZE, seed=seed)
        # the scorer always learns (and FD compares against) the whole training set: a model
        # trained on a subset is judged by how well it learned the data the subset came from
        scorer, clf_info = fit_scorer(full_set, seed, epochs=2)
        train_set = subset(full_set, args.subset, seed) if args.subset else full_set
        rows: dict[str, dict] = {}
        out["seeds"][str(seed)] = {"scorer": clf_info, "recipes": rows}
        # the default first: it sets the clock (a screening run may leave it out)
        order = ["default"] * ("default" in names) + [r for r in names if r != "default"]
        for name in order:
            rows[name] = {
                "equal_steps": train_recipe(
                    name, steps, seed, train_set, width, n, scorer, args.curve, extra
                )
            }
            print(
                f"seed {seed} {name:<12} {steps} steps: {fmt(rows[name]['equal_steps'])}",
                flush=True,
            )
            args.out.write_text(json.dumps(out, indent=2) + "\n")  # a crash keeps what ran
        if not args.equal_seconds:
            continue
        budget = rows["default"]["equal_steps"]["train_seconds"] * args.seconds_fraction
        for name in order[1:]:
            if args.equal_seconds_for and name not in args.equal_seconds_for:
                continue
            per_step = rows[name]["equal_steps"]["train_seconds"] / steps
            fit = max(1, round(budget / per_step))
            rows[name]["equal_seconds"] = train_recipe(
                name, fit, seed, train_set, width, n, scorer, args.curve, extra
            )
            print(
                f"seed {seed} {name:<12} {budget:.0f} s: {fmt(rows[name]['equal_seconds'])}",
                flush=True,
            )
            args.out.write_text(json.dumps(out, indent=2) + "\n")
        if args.seconds_fraction == 1.0:
            rows["default"]["equal_seconds"] = rows["default"]["equal_steps"]  # the same run
    return out


def subset(data: ImageTensorDataset, n: int, seed: int) -> ImageTensorDataset:
    """n images of data drawn without replacement by seed (a small-data run's training set)."""
    if not 0 < n <= len(data):
        raise SystemExit(f"--subset: 1 to {len(data)} images, got {n}")
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    labels = None if data.labels is None else data.labels[pick]
    return ImageTensorDataset(data.images[pick].clone(), labels, data.info)


def fmt(r: dict) -> str:
    return f"FD {r['fd']:.3f}, {r['classes_covered']}/{r['num_classes']} classes, {r['steps']} steps in {r['train_seconds']:.0f} s"


def print_study(out: dict) -> None:
    print()
    print(
        f"Fashion-MNIST 28px, width {out['width']}, batch {BATCH}, {out['samples']} samples; "
        f"equal steps = {out['steps']} G steps, equal seconds = "
        f"{out.get('seconds_fraction', 1.0):g} x the default's training time"
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
    curves = [
        (name, seed, r["equal_steps"]["fd_by_step"])
        for seed, s in out["seeds"].items()
        for name, r in s["recipes"].items()
        if "fd_by_step" in r["equal_steps"]
    ]
    if curves:
        print("\nFD by step (the earlier checkpoints of the equal-steps runs)")
        for name, seed, c in curves:
            print(f"{name:<12} {seed:>4} | " + "  ".join(f"{k}: {v:.3f}" for k, v in c.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="G steps at equal steps (3000)")
    ap.add_argument("--seeds", default="0,1", help="seeds, each with its own scorer (0,1)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--samples", type=int, default=None, help="generated images scored (10000)")
    ap.add_argument(
        "--subset",
        type=int,
        default=None,
        help="train on this many images of the training set, drawn by the seed (small-data "
        "runs); the scorer still learns all of it",
    )
    ap.add_argument("--width", type=int, default=None, help="g_width = d_width for every recipe")
    ap.add_argument(
        "--recipes",
        default="plain,default,rpgan_r1r2,d_steps2",
        help=f"comma-separated of plain, {', '.join(RECIPES)} (default needed unless "
        "--no-equal-seconds)",
    )
    ap.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "auto"],
        help="every recipe's precision (auto: what a job gets by default on this machine)",
    )
    ap.add_argument(
        "--no-equal-seconds",
        dest="equal_seconds",
        action="store_false",
        help="equal steps only (a screening run)",
    )
    ap.add_argument(
        "--equal-seconds-for",
        type=lambda text: {r.strip() for r in text.split(",") if r.strip()},
        default=set(),
        help="only these recipes get an equal-seconds run (e.g. those whose steps cost more "
        "or less than the default's; all by default)",
    )
    ap.add_argument(
        "--seconds-fraction",
        type=float,
        default=1.0,
        help="the equal-seconds runs get this fraction of the default's time (0.5: can a "
        "recipe match the default in half its time?)",
    )
    ap.add_argument(
        "--curve", action="store_true", help="also score each run's earlier checkpoints"
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
