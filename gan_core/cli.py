"""``ganforge train`` and ``ganforge sample``: the engine from the command line, no service needed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine's subcommands to a parent parser."""
    p = subparsers.add_parser("train", help="train a GAN from a JSON config")
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig fields (default: all defaults)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override one field, e.g. --set steps=200 --set dataset='\"shapes\"'")
    p.add_argument("--out", type=Path, required=True, help="run directory (resumes if it has checkpoints)")
    p.add_argument("--data-dir", action="append", default=[], type=Path, help="where datasets live")
    p.add_argument("--download", action="store_true", help="let torchvision download built-ins")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=train_command)

    s = subparsers.add_parser("sample", help="write a PNG grid of samples from a checkpoint")
    s.add_argument("--checkpoint", type=Path, required=True, help="a run dir (latest) or a checkpoint dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--nrow", type=int, default=8)
    s.add_argument("--label", type=int, default=None, help="class id for a conditional model")
    s.add_argument("--truncation", type=float, default=None)
    s.add_argument("--raw", action="store_true", help="use the raw generator, not the EMA one")
    s.add_argument("-o", "--output", type=Path, required=True)
    s.set_defaults(func=sample_command)


def _parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants FIELD=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # bare strings: --set dataset=shapes
    return out


def train_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gan_core.config import TrainConfig
    from gan_core.data import DatasetError
    from gan_core.training import TrainHooks, TrainingDiverged, train

    raw = json.loads(args.config.read_text()) if args.config else {}
    try:
        config = TrainConfig.model_validate(raw | _parse_overrides(args.set))
    except ValidationError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return 2
    bar = None if args.no_progress else tqdm(total=config.steps, unit="step", dynamic_ncols=True)

    def on_progress(p):
        if bar is not None:
            bar.n = p.step
            bar.set_postfix(d=f"{p.losses.get('d', 0):.3f}", g=f"{p.losses.get('g', 0):.3f}",
                            img_s=f"{p.images_per_sec:.0f}", epoch=f"{p.epoch:.2f}")
            bar.refresh()

    try:
        result = train(config, args.out, TrainHooks(on_progress=on_progress),
                       data_dirs=args.data_dir, allow_download=args.download)
    except (DatasetError, TrainingDiverged, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(f"{result.status} at step {result.step}; checkpoint: {result.checkpoint}")
    return 0


def sample_command(args: argparse.Namespace) -> int:
    from gan_core.checkpoint import CheckpointError, latest_checkpoint, load_generator
    from gan_core.sampling import png_grid, sample

    path = args.checkpoint
    if (path / "checkpoints").is_dir():
        path = latest_checkpoint(path) or path
    try:
        G = load_generator(path, ema=not args.raw)
        images = sample(G, args.n, args.seed, labels=args.label, truncation=args.truncation)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(png_grid(images, nrow=args.nrow))
    print(f"wrote {args.n} samples from {path} to {args.output}")
    return 0
