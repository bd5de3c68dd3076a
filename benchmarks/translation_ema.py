"""EMA or not for a translator (issue 18: "EMA where it helps (measure)").

One pix2pix run per seed on the built-in shapes-edges with the EMA generator kept
(ema_decay 0.999); every checkpoint's EMA and raw translators are scored by the service's
own TranslationScorer on the held-out pairs (fd in the photos' feature space, l1 on [-1, 1],
psnr, ssim). The two translators come from the same run, so the comparison is paired.

    .venv/bin/python benchmarks/translation_ema.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from gan_core.checkpoint import list_checkpoints
from gan_core.data.pairs import load_pairs
from gan_core.jobconfig import parse_config
from gan_core.metrics.translation import TranslationScorer
from gan_core.training import train

METRICS = ("fd", "l1", "psnr", "ssim")


def run(seed: int, steps: int, width: int, every: int) -> dict:
    config = parse_config(
        {
            "kind": "paired",
            "g_width": width,
            "d_width": width,
            "steps": steps,
            "checkpoint_every": every,
            "keep_checkpoints": 1000,
            "ema_decay": 0.999,
            "seed": seed,
            "precision": "fp32",  # as recorded (before precision: auto became the default)
        }
    )
    run_dir = tempfile.mkdtemp()
    started = time.monotonic()
    train(config, run_dir)
    seconds = time.monotonic() - started
    data = load_pairs("shapes-edges", image_size=config.image_size, seed=0, pairing="paired")
    scorer = TranslationScorer.fit(data, torch.device("cpu"))
    rows = []
    for ckpt in list_checkpoints(run_dir):
        scores = scorer.score(ckpt)
        rows.append(
            {
                "step": int(ckpt.name.split("-")[1]),
                **{g: {m: scores[g][m] for m in METRICS} for g in ("ema", "raw")},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "seed": seed,
        "train_seconds": seconds,
        "config": config.model_dump(mode="json"),
        "checkpoints": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/translation_ema.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = [run(s, args.steps, args.width, args.every) for s in args.seeds]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
