"""``ganforge train`` and ``ganforge sample``: the engine from the command line, no service needed."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:  # torch-heavy imports stay lazy: `ganforge --help` should be instant
    from gan_core.checkpoint import CheckpointInfo
    from gan_core.config import TrainConfig
    from gan_core.data import ImageTensorDataset
    from gan_core.distributed import DistContext
    from gan_core.training import Progress, TrainResult


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine's subcommands to a parent parser."""
    p = subparsers.add_parser("train", help="train a GAN from a JSON config")
    p.add_argument(
        "--config", type=Path, help="JSON file with TrainConfig fields (default: all defaults)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override one field, e.g. --set steps=200 --set dataset='\"shapes\"'",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="run directory (resumes if it has checkpoints)"
    )
    p.add_argument("--data-dir", action="append", default=[], type=Path, help="where datasets live")
    p.add_argument("--download", action="store_true", help="let torchvision download built-ins")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="train data-parallel on N processes (one per GPU, or CPU processes sharing the "
        "cores), started here; under torchrun, its WORLD_SIZE (sets config devices)",
    )
    p.add_argument(
        "--score",
        action="store_true",
        help="after each checkpoint, print FD, KID and precision/recall of the EMA and raw "
        "generators (the feature extractor is trained on the data once and kept in "
        "OUT/scorer/)",
    )
    p.add_argument(
        "--score-samples",
        type=int,
        default=None,
        metavar="N",
        help="images generated per generator when scoring "
        "(default: gan_core.metrics.DEFAULT_NUM_SAMPLES)",
    )
    p.set_defaults(func=train_command)

    s = subparsers.add_parser("sample", help="write a PNG grid of samples from a checkpoint")
    s.add_argument(
        "--checkpoint", type=Path, required=True, help="a run dir (latest) or a checkpoint dir"
    )
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
    raw |= _parse_overrides(args.set)
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.devices is not None or torchrun:
        raw["devices"] = args.devices if args.devices is not None else int(os.environ["WORLD_SIZE"])
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return 2
    if config.devices > 1 or torchrun:
        if args.score:
            print("--score: not with several devices yet; score with one", file=sys.stderr)
            return 2
        return _train_parallel(config, args, torchrun)
    if args.score_samples is not None and args.score_samples < 2:
        print("--score-samples must be at least 2", file=sys.stderr)
        return 2
    hooks = TrainHooks()
    dataset = None
    if args.score:
        try:
            finished = _finished_step(config, args.out)
            if finished is not None:  # nothing to train: say so at once, not after the scorer
                return _print_recorded_scores(args.out, finished, config.steps)
            dataset = _run_dataset(config, args)
            hooks.on_checkpoint = _checkpoint_scorer(
                config,
                dataset,
                args.out / "scorer",
                args.score_samples,
                tqdm.write,
                record=args.out / SCORES_FILE,
            )
        except (DatasetError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    bar = None if args.no_progress else tqdm(total=config.steps, unit="step", dynamic_ncols=True)
    hooks.on_progress = _show_progress(bar)
    try:
        result = train(
            config,
            args.out,
            hooks,
            dataset=dataset,
            data_dirs=args.data_dir,
            allow_download=args.download,
        )
    except (DatasetError, TrainingDiverged, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(f"{result.status} at step {result.step}; checkpoint: {result.checkpoint}")
    return 0


def _show_progress(bar: Any) -> Callable[[Progress], None]:
    """An on_progress hook moving a tqdm bar (or doing nothing without one)."""

    def on_progress(p: Progress) -> None:
        if bar is not None:
            bar.n = p.step
            bar.set_postfix(
                d=f"{p.losses.get('d', 0):.3f}",
                g=f"{p.losses.get('g', 0):.3f}",
                img_s=f"{p.images_per_sec:.0f}",
                epoch=f"{p.epoch:.2f}",
            )
            bar.refresh()

    return on_progress


def _train_rank(
    dist: DistContext | None,
    config: TrainConfig,
    out: Path,
    data_dirs: list[Path],
    download: bool,
    progress: bool,
) -> TrainResult:
    """One rank of a data-parallel `ganforge train`; rank 0 shows the progress bar."""
    from tqdm import tqdm

    from gan_core.training import TrainHooks, train

    main = dist is None or dist.is_main
    bar = tqdm(total=config.steps, unit="step", dynamic_ncols=True) if progress and main else None
    hooks = TrainHooks(on_progress=_show_progress(bar))
    try:
        return train(config, out, hooks, data_dirs=data_dirs, allow_download=download, dist=dist)
    finally:
        if bar is not None:
            bar.close()


def _train_parallel(config: TrainConfig, args: argparse.Namespace, torchrun: bool) -> int:
    """`ganforge train` on config.devices ranks: started here, or this process as the rank
    torchrun made it."""
    import torch
    import torch.distributed

    from gan_core.data import DatasetError
    from gan_core.launch import RankFailed, init_from_env, launch
    from gan_core.training import TrainingDiverged, resolve_device

    device = resolve_device(config.device).type
    rank_args = (config, args.out, args.data_dir, args.download, not args.no_progress)
    try:
        if torchrun:
            dist = init_from_env(device=device)
            try:
                result = _train_rank(dist, *rank_args)
            finally:
                # leave the group before exiting: a gloo group still up at interpreter exit
                # can abort the process ("terminate called without an active exception",
                # SIGABRT), and torchrun then fails the run after it finished
                with contextlib.suppress(Exception):
                    torch.distributed.destroy_process_group()
            if dist is not None and not dist.is_main:
                return 0
        else:
            # CPU ranks share the cores; a GPU rank keeps its process's threads
            threads = None
            if device == "cpu":
                threads = max(1, torch.get_num_threads() // config.devices)
            result = launch(config.devices, _train_rank, *rank_args, device=device, threads=threads)
    except (DatasetError, TrainingDiverged, ValueError, RankFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{result.status} at step {result.step}; checkpoint: {result.checkpoint}")
    return 0


# In --out: the scores `--score` printed, by checkpoint step, so a re-run can print them again.
SCORES_FILE = "scores.json"


def _finished_step(config: TrainConfig, out: Path) -> int | None:
    """The step of ``out``'s latest checkpoint when it already reached ``config.steps`` (a
    resume would train nothing), else None. ValueError if the config cannot resume it."""
    from gan_core.checkpoint import config_from_meta, latest_checkpoint, read_meta
    from gan_core.training import _check_resumable

    latest = latest_checkpoint(out)
    if latest is None:
        return None
    meta = read_meta(latest, verify=False)
    steps = _check_resumable(config_from_meta(meta), config).steps
    step = int(meta["step"])
    return step if step >= steps else None


def _read_scores(path: Path) -> dict[str, dict]:
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _record_scores(path: Path, step: int, scores: dict) -> None:
    recorded = _read_scores(path) | {str(step): scores}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True))
    tmp.replace(path)


def _print_recorded_scores(out: Path, step: int, steps: int) -> int:
    from gan_core.checkpoint import list_checkpoints, read_meta
    from gan_core.metrics.scorer import format_scores

    print(
        f"nothing to train: {out} is at step {step} and steps is {steps}; raise steps to "
        f"train longer (e.g. --set steps={2 * step})"
    )
    recorded = _read_scores(out / SCORES_FILE)
    for ckpt in list_checkpoints(out):
        n = int(read_meta(ckpt, verify=False)["step"])
        scores = recorded.get(str(n))
        if scores:
            print(f"step {n} scores: {format_scores(scores)} (recorded)")
        else:
            print(f"step {n}: no recorded scores (it was trained without --score)")
    return 0


def _run_dataset(config: TrainConfig, args: argparse.Namespace) -> ImageTensorDataset:
    """The dataset train() would load for this run, loaded here so the scorer can see it too."""
    from gan_core.checkpoint import config_from_meta, latest_checkpoint, read_meta
    from gan_core.data import load_dataset

    channels = config.channels
    latest = latest_checkpoint(args.out)
    if channels is None and latest is not None:  # a resumed run keeps its resolved channels
        channels = config_from_meta(read_meta(latest, verify=False)).channels
    return load_dataset(
        config.dataset,
        image_size=config.image_size,
        channels=channels,
        data_dirs=args.data_dir,
        allow_download=args.download,
        seed=config.seed,
    )


def _checkpoint_scorer(
    config: TrainConfig,
    dataset: ImageTensorDataset,
    directory: Path,
    num_samples: int | None,
    write: Callable[[str], object],
    record: Path | None = None,
) -> Callable[[CheckpointInfo], None]:
    """An on_checkpoint hook printing the EMA and raw generators' scores (and keeping them in
    `record`); trains or reuses the dataset's extractor and reference in `directory` first."""
    from gan_core.metrics import DEFAULT_NUM_SAMPLES
    from gan_core.metrics.scorer import CheckpointScorer, build_scorer, format_scores, load_scorer
    from gan_core.training import resolve_device

    device = resolve_device(config.device)
    found = load_scorer(directory, dataset, device, write)
    if found is not None:
        write(f"scorer: reusing the extractor in {directory}")
    elif record is not None:  # a new extractor: scores recorded with another do not compare
        record.unlink(missing_ok=True)
    extractor, reference = found or build_scorer(directory, dataset, device, write)
    n = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    scorer = CheckpointScorer(extractor, reference, device, num_samples=n)

    def on_checkpoint(info: CheckpointInfo) -> None:
        scores = scorer.score(info.path)
        write(f"step {info.step} scores: {format_scores(scores)} ({scores['seconds']:.1f}s)")
        if record is not None:
            _record_scores(record, info.step, scores)

    return on_checkpoint


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
