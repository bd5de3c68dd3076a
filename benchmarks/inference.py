"""The sampler's fast path against the fp32 floor, in one run: speed, cold cost and tolerance.

It trains the default recipe (``TrainConfig(dataset='fashion-mnist', image_size=28, ...)``,
widths 64, every other field at its default) for ``--steps`` steps through ``gan_core.training.train``,
or takes ``--checkpoint DIR``, and then, for a 64-image 8x8 grid of the EMA generator:

  floor       ``load_generator`` + ``gan_core.sampling.generate`` + ``png_grid``: the plain
              eval-mode fp32 forward the sampler ran before this path existed
  fp32        ``gan_core.inference.prepare(G, "fp32")``: BatchNorm folded into the layer
              before it, channels_last, inference mode
  bf16        the same with bf16 weights (oneDNN bf16 kernels: AVX512-BF16 / AMX); timed
              only where the CPU has native bf16 (or with --all-modes: emulated bf16 takes
              seconds per grid), its tolerance always measured
  *+compile   the same after ``torch.compile`` (inductor), measured after warm-up, and its
              compile time (what a first request would pay)

Speed: p50 of the render (G forward + PNG encode) over rounds that interleave the variants
(so machine load cancels), ratios against the floor in the same run. Cold: load + prepare +
first render of a checkpoint. Tolerance: the mean and max absolute difference of the uint8
pixels that the PNG holds, against the floor, over ``--seeds`` grids (also for the raw
generator), and whether each mode gives the same bytes twice.

    .venv/bin/python benchmarks/inference.py                     # ~6 min on 2 CPU cores
    .venv/bin/python benchmarks/inference.py --no-compile        # skip the torch.compile rows
    .venv/bin/python benchmarks/inference.py --checkpoint DIR    # an existing checkpoint

Targets (issue 11): mean |bf16 - fp32| <= 1/255 of the pixel range; >= 2x the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what `ganforge serve` sets

import torch  # noqa: E402

from gan_core import inference  # noqa: E402
from gan_core.checkpoint import latest_checkpoint, load_generator  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.sampling import generate, png_grid, sample_inputs, to_uint8_grid  # noqa: E402
from gan_core.training import train  # noqa: E402

N, NROW = 64, 8
Render = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def trained_checkpoint(steps: int, seed: int, workdir: Path) -> Path:
    config = TrainConfig(
        dataset="fashion-mnist",
        image_size=28,
        steps=steps,
        batch_size=64,
        g_width=64,  # the widths every figure in docs/benchmarks.md was measured at
        d_width=64,
        seed=seed,
        checkpoint_every=steps,
    )
    t0 = time.perf_counter()
    train(config, workdir)
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    path = latest_checkpoint(workdir)
    assert path is not None
    return path


def floor_render(G: torch.nn.Module) -> Render:
    return lambda z, y: generate(G, z, y)  # type: ignore[arg-type]


def prepared_render(G: torch.nn.Module) -> Render:
    return lambda z, y: inference.run(G, z, y)  # type: ignore[arg-type]


def pixels(render: Render, G: torch.nn.Module, seed: int) -> torch.Tensor:
    z, y = sample_inputs(G, N, seed)  # type: ignore[arg-type]
    return to_uint8_grid(render(z, y), nrow=NROW).to(torch.int16)


def tolerance(ckpt: Path, ema: bool, mode: str, seeds: int) -> dict:
    G = load_generator(ckpt, ema=ema)
    P = inference.prepare(G, mode)  # type: ignore[arg-type]
    diffs, worst, same_bytes = [], 0, True
    for seed in range(seeds):
        a, b = pixels(floor_render(G), G, seed), pixels(prepared_render(P), G, seed)
        d = (a - b).abs()
        diffs.append(d.float().mean().item())
        worst = max(worst, int(d.max()))
        z, y = sample_inputs(G, N, seed)
        same_bytes &= png_grid(inference.run(P, z, y)) == png_grid(inference.run(P, z, y))
    return {
        "mean_abs_px": statistics.fmean(diffs),
        "mean_abs_px_worst_grid": max(diffs),
        "max_abs_px": worst,
        "within_1_of_255": max(diffs) <= 1.0,
        "same_bytes_twice": same_bytes,
    }


def timed_render(render: Render, z: torch.Tensor, y: torch.Tensor | None) -> float:
    t0 = time.perf_counter()
    png_grid(render(z, y), nrow=NROW)
    return time.perf_counter() - t0


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=16, help="grids compared for the tolerance")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--all-modes",
        action="store_true",
        help="time bf16 even where this CPU has no native bf16 (emulated: seconds per grid)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/inference.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ganforge-inference-") as tmp:
        ckpt = args.checkpoint or trained_checkpoint(args.steps, args.seed, Path(tmp))
        result: dict = {
            "benchmark": "inference",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "env": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "cpu_has_fast_bf16": inference.cpu_has_fast_bf16(),
                "auto_mode": inference.resolve_mode("auto"),
            },
        }

        # cold: what the first request on a checkpoint pays (load + prepare + one render)
        z, y = sample_inputs(load_generator(ckpt), N, 12345)
        cold = {}
        native = inference.cpu_has_fast_bf16()
        for mode in ("floor", *[m for m in inference.MODES if m == "fp32" or native]):
            t0 = time.perf_counter()
            G = load_generator(ckpt)
            render = floor_render(G)
            if mode != "floor":
                render = prepared_render(inference.prepare(G, mode))  # type: ignore[arg-type]
            png_grid(render(z, y))
            cold[mode] = (time.perf_counter() - t0) * 1e3
        result["cold_ms"] = cold

        G = load_generator(ckpt)
        variants: dict[str, Render] = {"floor": floor_render(G)}
        timed_modes = [m for m in inference.MODES if m == "fp32" or native or args.all_modes]
        result["timed_modes"] = timed_modes
        for mode in timed_modes:
            variants[mode] = prepared_render(inference.prepare(G, mode))  # type: ignore[arg-type]
        compile_s = {}
        if not args.no_compile:
            for mode in timed_modes:
                P = inference.prepare(G, mode)  # type: ignore[arg-type]
                C = torch.compile(P, dynamic=False)
                C.serving_mode = mode  # type: ignore[attr-defined]
                compile_s[mode] = timed(lambda C=C: inference.run(C, z, y))  # type: ignore[misc]
                variants[f"{mode}+compile"] = prepared_render(C)  # type: ignore[arg-type]
        result["compile_first_call_s"] = compile_s

        for render in variants.values():  # warm-up
            for _ in range(3):
                png_grid(render(z, y))
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.rounds):
            zr, yr = sample_inputs(G, N, r)
            for name, render in variants.items():
                times[name].append(timed_render(render, zr, yr))
        floor = statistics.median(times["floor"])
        result["render_ms"] = {
            name: {
                "p50": statistics.median(t) * 1e3,
                "min": min(t) * 1e3,
                "speedup_vs_floor": floor / statistics.median(t),
            }
            for name, t in times.items()
        }
        result["tolerance"] = {
            f"{mode}/{'ema' if ema else 'raw'}": tolerance(ckpt, ema, mode, args.seeds)
            for mode in inference.MODES
            for ema in (True, False)
        }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nrender of a {N}-image grid (G forward + PNG), p50 over {args.rounds} rounds:")
    for name, r in result["render_ms"].items():
        print(f"  {name:14s} {r['p50']:7.1f} ms   {r['speedup_vs_floor']:.2f}x the floor")
    print(
        "cold (load + prepare + first render): "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in cold.items())
    )
    for k, v in compile_s.items():
        print(f"torch.compile first call ({k}): {v:.1f} s")
    print("tolerance against the floor (uint8 pixels):")
    for k, t in result["tolerance"].items():
        print(
            f"  {k:9s} mean {t['mean_abs_px']:.3f}/255 (worst grid {t['mean_abs_px_worst_grid']:.3f})"
            f"  max {t['max_abs_px']}  same bytes twice: {t['same_bytes_twice']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
