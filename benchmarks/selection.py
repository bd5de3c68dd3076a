"""Choosing a checkpoint: `best` and `ema=auto` against `latest`, and what scoring costs.

Trains the default recipe on Fashion-MNIST (28 px, batch 64; --steps, a checkpoint every
--every, all kept) and scores every checkpoint as the service's worker does
(``gan_core.metrics.scorer.CheckpointScorer``: an extractor trained on the train split,
--samples images per generator, seed 0), timing the training between checkpoints and the
scoring of each. Then it judges the service's choices on a held-out statistic, the quality
benchmark's: FD in the features of a separately trained classifier, 10,000 samples with
another seed, against the 10,000 *test* images the per-checkpoint scorer never saw:

- latest, ema=true   (what samples.png served before ema=auto)
- latest, ema=auto
- best,   ema=auto   (checkpoints/best: the lowest per-checkpoint FD, and its better G)
- oracle             (the lowest held-out FD over every checkpoint and both generators)

    .venv/bin/python benchmarks/selection.py --width 32             # ~15 min on 2 CPU cores
    .venv/bin/python benchmarks/selection.py --width 64 --steps 1000 --out benchmarks/results/scoring-cost-w64.json

Results: a table on stdout and JSON at --out.
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

from benchmarks.quality import fit_scorer, sample_eval  # noqa: E402
from gan_core.checkpoint import CheckpointInfo, list_checkpoints, load_generator  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.data import load_dataset  # noqa: E402
from gan_core.metrics.scorer import CheckpointScorer, build_scorer  # noqa: E402
from gan_core.training import TrainHooks, train  # noqa: E402

HELD_OUT_SEED = 12345  # the held-out samples' seed (the per-checkpoint scorer uses 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=500, help="checkpoint cadence (the default)")
    ap.add_argument("--width", type=int, default=64, help="g_width = d_width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=2000, help="per-checkpoint scoring samples")
    ap.add_argument("--held-out", type=int, default=10_000, help="samples for the held-out FD")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/selection.json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", image_size=28)
    device = torch.device("cpu")
    work = Path(tempfile.mkdtemp(prefix="ganforge-selection-"))

    t0 = time.monotonic()
    extractor, reference = build_scorer(work / "scorer", data, device, print)
    extractor_seconds = time.monotonic() - t0
    scorer = CheckpointScorer(extractor, reference, device, num_samples=args.samples)

    config = TrainConfig(
        dataset="fashion-mnist",
        image_size=28,
        batch_size=64,
        steps=args.steps,
        seed=args.seed,
        g_width=args.width,
        d_width=args.width,
        checkpoint_every=args.every,
        keep_checkpoints=1000,
        precision="fp32",  # as recorded (before precision: auto became the default)
    )
    rows: list[dict] = []
    clock = {"since": time.monotonic()}

    def on_checkpoint(info: CheckpointInfo) -> None:
        trained = time.monotonic() - clock["since"]
        scores = scorer.score(info.path)
        rows.append(
            {
                "step": info.step,
                "train_seconds": round(trained, 2),
                "score_seconds": scores["seconds"],
                "scores": scores,
            }
        )
        print(
            f"step {info.step}: trained {trained:.1f}s, scored in {scores['seconds']:.1f}s "
            f"(fd ema {scores['ema']['fd']:.3f} raw {scores['raw']['fd']:.3f})",
            flush=True,
        )
        clock["since"] = time.monotonic()

    t_train = time.monotonic()
    train(config, work / "run", TrainHooks(on_checkpoint=on_checkpoint), dataset=data)
    wall = time.monotonic() - t_train

    print("fitting the held-out scorer ...", flush=True)
    judge, judge_info = fit_scorer(data, seed=args.seed, epochs=2)
    held_out: dict[tuple[int, str], float] = {}
    for path, row in zip(list_checkpoints(work / "run"), rows, strict=True):
        for name in ("ema", "raw"):
            G = load_generator(path, ema=name == "ema")
            held_out[(row["step"], name)] = judge.score(
                sample_eval(G, args.held_out, HELD_OUT_SEED)
            ).fd
        row["held_out_fd"] = {n: round(held_out[(row["step"], n)], 4) for n in ("ema", "raw")}

    def pick(row: dict, choice: str) -> str:
        return row["scores"]["preferred"] if choice == "auto" else choice

    latest = rows[-1]
    best = min(rows, key=lambda r: (r["scores"]["fd"], -r["step"]))
    oracle = min(held_out, key=lambda k: held_out[k])
    choices = {
        "latest, ema=true": (latest["step"], "ema"),
        "latest, ema=auto": (latest["step"], pick(latest, "auto")),
        "best, ema=auto": (best["step"], pick(best, "auto")),
        "oracle": oracle,
    }
    table = {
        name: {"step": step, "generator": g, "held_out_fd": round(held_out[(step, g)], 4)}
        for name, (step, g) in choices.items()
    }
    between = [r["train_seconds"] for r in rows[1:]] or [rows[0]["train_seconds"]]
    cost = sum(r["score_seconds"] for r in rows) / len(rows) / (sum(between) / len(between))
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor(),
        },
        "extractor_seconds": round(extractor_seconds, 1),
        "train_wall_seconds": round(wall, 1),
        "scoring_cost_ratio": round(cost, 4),
        "held_out_scorer": judge_info,
        "choices": table,
        "checkpoints": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nextractor (once per dataset): {extractor_seconds:.1f}s")
    print(f"scoring both generators: {100 * cost:.1f}% of the training time between checkpoints")
    print(f"{'choice':<20} {'step':>6} {'G':>4} {'held-out FD':>12}")
    for name, row in table.items():
        print(f"{name:<20} {row['step']:>6} {row['generator']:>4} {row['held_out_fd']:>12.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
