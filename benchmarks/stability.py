"""Is a recipe stable on larger colour images? 64px RGB ``shapes``, the default vs recipes.

Each recipe (recipes.py's RECIPES, overrides of the default config) trains on the built-in
procedural ``shapes`` data at 64px in colour, through ``gan_core.training.train``. Scored by a
classifier trained on shapes (a second seed's images as the reference): FD of the EMA G and of
the raw G, next to an untrained G's, and whether the run finished with finite losses.

    .venv/bin/python benchmarks/stability.py --width 32 --steps 500 \\
        --recipes default,betas_0.5 --out benchmarks/results/stability-64px.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere without installing
    sys.path.insert(0, str(REPO))

from benchmarks._rgb_folder import CHANNELS, SIZE, rgb_data, rgb_scorer  # noqa: E402
from benchmarks.quality import sample_eval  # noqa: E402
from benchmarks.recipes import RECIPES  # noqa: E402
from gan_core.checkpoint import load_generator  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.nets import build_generator  # noqa: E402
from gan_core.training import TrainHooks, TrainingDiverged, train  # noqa: E402

SAMPLES = 2000  # generated images scored


def run(args: argparse.Namespace) -> dict:
    names = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if unknown := [r for r in names if r not in RECIPES]:
        raise SystemExit(f"--recipes: unknown {unknown}; known: {list(RECIPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    train_set, reference = rgb_data(args.dataset, args.seed)
    scorer = rgb_scorer(train_set, reference, args.seed)

    def fd(G: torch.nn.Module) -> float:
        return round(scorer.score(sample_eval(G, SAMPLES, args.seed)).fd, 3)

    base = {
        "dataset": "shapes",  # the name only: the data itself is train_set
        "image_size": SIZE,
        "channels": CHANNELS,
        "g_width": args.width,
        "d_width": args.width,
        "steps": args.steps,
        "seed": args.seed,
        "checkpoint_every": args.steps,
        # fp32 by default, as the runs before precision "auto" became the default recorded
        "precision": args.precision,
    }
    torch.manual_seed(args.seed)
    out: dict = {
        "benchmark": "stability-64px-rgb",
        "dataset": args.dataset if args.dataset == "shapes" else "tinted-fashion-folder",
        "train_images": len(train_set),
        "steps": args.steps,
        "seed": args.seed,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "width": args.width,
        "samples": SAMPLES,
        "untrained_G_fd": fd(build_generator(TrainConfig(**base))),
        "recipes": {},
    }
    print(f"untrained G: FD {out['untrained_G_fd']}", flush=True)
    for name in names:
        config = TrainConfig(**base, **RECIPES[name])
        with tempfile.TemporaryDirectory(prefix="ganforge-stability-") as tmp:
            t0 = time.monotonic()
            row: dict = {"overrides": RECIPES[name]}
            if config.arch != "dcgan":  # the baseline of its own nets
                torch.manual_seed(args.seed)
                row["untrained_G_fd"] = fd(build_generator(config))
            saved: list = []  # at each checkpoint, the mean losses since the last report
            hooks = TrainHooks(on_checkpoint=lambda info, saved=saved: saved.append(info.losses))
            try:
                result = train(config, Path(tmp), hooks, dataset=train_set, resume=False)
            except TrainingDiverged as e:  # unstable: what we want to know, not a crash
                row.update(status="diverged", error=str(e))
            else:
                row["status"] = result.status
                row["precision"] = result.config.precision  # "auto" resolved
                row["final_losses"] = saved[-1] if saved else None
                if result.checkpoint is not None:
                    row["ema_G_fd"] = fd(load_generator(result.checkpoint, ema=True))
                    row["raw_G_fd"] = fd(load_generator(result.checkpoint, ema=False))
            row["train_seconds"] = round(time.monotonic() - t0, 1)
        out["recipes"][name] = row
        print(f"{name:<12} {row}", flush=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--width", type=int, default=32, help="g_width = d_width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", default="default,betas_0.5")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument(
        "--dataset",
        default="shapes",
        choices=["shapes", "folder"],
        help="shapes (procedural), or folder: tinted Fashion-MNIST garments written as an "
        "uploaded labelled folder of PNGs and read through image-folder: (_rgb_folder.py)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/stability-64px.json")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    run(args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
