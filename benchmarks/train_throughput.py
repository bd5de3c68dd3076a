"""Training throughput of the engine (gan_core.training.train) against a bare PyTorch loop.

Both train the same nets (gan_core.nets.build_generator/build_discriminator of one config:
--arch dcgan, the default, or resnet), hinge loss, Adam, batch 64, the same in-memory
dataset, in this one process, interleaved round by round, so machine load hits both alike.
Only steady state is timed: the first --warmup steps of every run are skipped.

Widths: dcgan at 64 (the width every DCGAN figure in docs/benchmarks.md was measured at);
resnet at the config's default, 32 (what a resnet job trains; blocks per stage, group size
and expansion also the defaults for --image-size). --width overrides both.

Variants (images/s = real images consumed per second):

  engine          train() with augment=None, ema_decay=None   -- apples to apples with `bare`
                  (hinge loss, no R1/R2, no EMA, no augmentation, for either arch)
  engine_default  train() with the defaults plus DiffAugment translation,cutout: EMA + augmentation
  dcgan only:
  engine_width32  `engine` at width 32 (the config's width; every other variant is at 64)
  engine_width32_sn  `engine_width32` with spectral_norm (D without BatchNorm)
  resnet only:
  engine_preset   train() with preset resnet's own recipe (rpgan, R1 and R2 gamma 0.1 lazily
                  every 4th D step, EMA; no augmentation), for information: no bare loop runs it
  bare            a hand-written loop: same nets, loss, optimizers, batch size, data
  CPU only (each lever alone against `bare`, all bare loops):
  bare_channels_last  channels_last nets and batches
  bare_bf16       bf16 autocast (oneDNN's bf16 kernels; emulated where the CPU lacks them)
  bare_bf16_channels_last  both of the above
  bare_fused_adam Adam(fused=True) instead of the default foreach implementation
  bare_compiled   G and D through torch.compile (compiled during warm-up, not timed)
  engine_bf16     train() as `engine` with precision bf16 (the engine's own bf16 path)
  engine_auto     train() as `engine` with precision auto, the default: what a job that names
                  no precision gets (bf16 where the device has it natively, else fp32);
                  reported against the bare eager fp32 loop (`bare` or `bare_fp32`)
  CUDA only (what each feature adds, all bare loops):
  bare_nchw       bare without channels_last (the engine uses channels_last on CUDA)
  bare_fp32 / bare_bf16   bare at the other precision than --precision
  bare_host_index bare taking each batch's indices from a CPU tensor with a blocking copy,
                  as gan_core.data.Batcher.next() does -- isolates that copy's cost

The headline is `engine / bare`, the median over rounds of the per-round ratio (paired, so
load drifts cancel). >= 1.0 (within noise) means the engine adds no overhead; issue 19's
target for the resnet nets is >= 0.95, in fp32 (`engine / bare`) and in bf16 on CPU
(`engine_bf16 / bare_bf16_channels_last`: the engine's bf16 runs channels_last on a CPU with
native bf16, so that is the bare loop with the same precision and layout; `bare_bf16`
elsewhere). Both verdicts are printed and kept in the JSON (`verdicts`).

    .venv/bin/python benchmarks/train_throughput.py                    # CPU, short
    .venv/bin/python benchmarks/train_throughput.py --arch resnet --variants \
        bare,engine,engine_bf16,bare_bf16_channels_last,engine_auto,engine_preset
    .venv/bin/python benchmarks/train_throughput.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

# The OpenMP policy `ganforge` sets for itself (app/cli.py); engine and bare share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from benchmarks._train_loops import profile, run_bare, run_engine  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.data import load_dataset  # noqa: E402
from gan_core.precision import resolve_precision  # noqa: E402
from gan_core.presets import PRESETS  # noqa: E402
from gan_core.state import uses_channels_last  # noqa: E402
from gan_core.training import resolve_config  # noqa: E402

# engine/bare at or above this passes: the engine adds no overhead (dcgan); issue 19 asks
# >= 0.95 of a bare loop of the same residual nets
TARGETS = {"dcgan": 1.0, "resnet": 0.95}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--device", choices=["cpu", "cuda"], default=os.environ.get("BENCH_DEVICE", "cpu")
    )
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument(
        "--arch",
        choices=["dcgan", "resnet"],
        default="dcgan",
        help="the nets every engine and bare variant trains (default dcgan)",
    )
    ap.add_argument(
        "--width",
        type=int,
        default=None,
        help="g_width and d_width (default: 64 for dcgan, the config's default for resnet)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per run after the warm-up (default cpu 8, cuda 300)",
    )
    ap.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default cpu 3, cuda 50)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    ap.add_argument("--dataset", default="shapes", help="shapes (default) or fashion-mnist")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    ap.add_argument(
        "--progress-interval",
        type=float,
        default=0.1,
        help="engine progress-report period in s; reports are the engine's timing marks",
    )
    ap.add_argument(
        "--variants",
        default=None,
        help="comma-separated subset of variants to run (default: all for the device)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="also profile engine vs bare (few steps)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_throughput.json")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    auto = resolve_precision("auto", device)  # what the default job trains in here
    steps = args.steps or (300 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (50 if cuda else 3)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.width is not None:
        widths = {"g_width": args.width, "d_width": args.width}
    elif args.arch == "dcgan":
        widths = {"g_width": 64, "d_width": 64}  # every DCGAN figure in docs/benchmarks.md
    else:
        widths = {}  # what a resnet job trains: the config's default widths

    t0 = time.perf_counter()
    dataset = load_dataset(args.dataset, image_size=args.image_size, seed=0)
    base = TrainConfig(
        arch=args.arch,
        dataset=args.dataset,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        steps=warmup + steps,
        checkpoint_every=warmup + steps,
        keep_checkpoints=1,
        augment="translation,cutout",
        **widths,
    )  # the most per-step work the engine does
    base = resolve_config(base, dataset)
    plain = base.model_copy(update={"augment": None, "ema_decay": None})
    images = dataset.images.to(device)
    print(
        f"dataset {args.dataset} {tuple(dataset.images.shape)} loaded in {time.perf_counter() - t0:.1f}s; "
        f"arch {args.arch} (widths {plain.g_width}/{plain.d_width}), device {device}, "
        f"precision {args.precision} (auto: {auto}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{warmup} warm-up + {steps} timed steps, {args.rounds} rounds, load {_loadavg()}"
    )

    other = "bf16" if args.precision == "fp32" else "fp32"
    bare_fp32 = "bare" if args.precision == "fp32" else "bare_fp32"
    # the bare loop with the precision and layout engine_{other} trains in (CPU variants)
    other_layout = uses_channels_last(plain.model_copy(update={"precision": other}), device)
    bare_same_other = f"bare_{other}_channels_last" if other_layout else f"bare_{other}"
    same_other = f"engine_{other}/{bare_same_other} (same precision and layout)"

    def engine_with(**update) -> dict:
        """`engine` with some config fields changed: what a job with those settings gets."""
        cfg = plain.model_copy(update=update)
        return run_engine(cfg, dataset, warmup, steps, args.progress_interval)

    variants = {
        "engine": lambda: run_engine(plain, dataset, warmup, steps, args.progress_interval),
        "engine_default": lambda: run_engine(base, dataset, warmup, steps, args.progress_interval),
    }
    if args.arch == "dcgan":
        variants |= {
            # the config's width since 2026-12-04: what does width 64 cost per step here?
            "engine_width32": lambda: engine_with(g_width=32, d_width=32),
            # spectral norm in D (in place of its BatchNorm) at width 32: its cost per step
            "engine_width32_sn": lambda: engine_with(g_width=32, d_width=32, spectral_norm=True),
        }
    else:
        # preset resnet as a job gets it (its fields over `plain`'s, and the default EMA back):
        # for information, against `engine` and `bare`; no bare loop runs rpgan + R1/R2
        preset = TrainConfig.model_validate(
            {
                **plain.model_dump(),
                **PRESETS["resnet"],
                "preset": "resnet",
                "ema_decay": base.ema_decay,
            }
        )
        variants["engine_preset"] = lambda: run_engine(
            preset, dataset, warmup, steps, args.progress_interval
        )
    variants |= {
        # precision as a job gets it when it names none (the config's default, "auto")
        "engine_auto": lambda: engine_with(precision="auto"),
        "bare": lambda: run_bare(
            plain, images, warmup, steps, precision=args.precision, channels_last=cuda
        ),
    }
    if not cuda:  # each CPU lever alone, against `bare` (fp32, NCHW, foreach Adam, eager)
        bare = functools.partial(run_bare, plain, images, precision=args.precision)
        variants |= {
            "bare_channels_last": lambda: bare(warmup, steps, channels_last=True),
            f"bare_{other}": lambda: run_bare(
                plain, images, warmup, steps, precision=other, channels_last=False
            ),
            f"bare_{other}_channels_last": lambda: run_bare(
                plain, images, warmup, steps, precision=other, channels_last=True
            ),
            "bare_fused_adam": lambda: bare(warmup, steps, channels_last=False, fused=True),
            "bare_compiled": lambda: bare(
                max(warmup, 3), steps, channels_last=False, compiled=True
            ),
            # the engine with `precision` switched: what a job with that setting gets
            f"engine_{other}": lambda: engine_with(precision=other),
        }
    if cuda:
        variants |= {
            "bare_nchw": lambda: run_bare(
                plain, images, warmup, steps, precision=args.precision, channels_last=False
            ),
            f"bare_{other}": lambda: run_bare(
                plain, images, warmup, steps, precision=other, channels_last=True
            ),
            "bare_host_index": lambda: run_bare(
                plain,
                images,
                warmup,
                steps,
                precision=args.precision,
                channels_last=True,
                host_index=True,
            ),
        }
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            print(f"error: unknown variants {unknown}; have {list(variants)}", file=sys.stderr)
            return 2
        variants = {k: variants[k] for k in wanted}
    names = list(variants)
    # The first training steps in a process pay one-off costs (kernel selection, allocator
    # growth) that a per-run warm-up does not fully hide; pay them once, untimed, up front.
    run_bare(plain, images, 0, max(warmup, 2), precision=args.precision, channels_last=cuda)
    if any(other in n for n in names) or ("engine_auto" in names and auto == other):
        # and those of the other precision's kernels (oneDNN's bf16 ones are built on first
        # use), or whichever of its variants runs first in round 1 pays them
        run_bare(plain, images, 0, max(warmup, 2), precision=other, channels_last=other_layout)
    results: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no fixed position
        for name in order:
            res = variants[name]()
            results[name].append(res)
            print(
                f"  round {r + 1}/{args.rounds} {name:<16} {res['images_per_sec']:9.1f} img/s "
                f"({res['timed_steps']} steps in {res['seconds']:.2f}s)",
                flush=True,
            )

    def analyse(metric: str) -> dict:
        vals = {k: [x[metric] for x in v] for k, v in results.items()}
        med = {k: statistics.median(v) for k, v in vals.items()}

        def paired(a: str, b: str) -> dict | None:
            if a not in vals or b not in vals:
                return None
            per_round = [x / y for x, y in zip(vals[a], vals[b], strict=True)]
            return {
                "median_of_round_ratios": statistics.median(per_round),
                "ratio_of_medians": med[a] / med[b],
                "per_round": per_round,
            }

        ratios = {
            "engine/bare": paired("engine", "bare"),
            "engine_default/bare": paired("engine_default", "bare"),
            "engine_default/engine (cost of EMA+augment)": paired("engine_default", "engine"),
            "engine_width32/engine (width 32 against 64)": paired("engine_width32", "engine"),
            "engine_width32_sn/engine_width32 (spectral norm)": paired(
                "engine_width32_sn", "engine_width32"
            ),
            f"engine_auto/{bare_fp32} (the default precision, {auto}, against eager fp32)": (
                paired("engine_auto", bare_fp32)
            ),
            "engine_preset/engine (rpgan + lazy R1/R2 + EMA)": paired("engine_preset", "engine"),
            "engine_preset/bare": paired("engine_preset", "bare"),
        }
        if cuda:
            ratios |= {
                "bare/bare_nchw (channels_last gain)": paired("bare", "bare_nchw"),
                "bare_host_index/bare (Batcher-style index copy)": paired(
                    "bare_host_index", "bare"
                ),
            }
            bf16, fp32 = (
                ("bare", f"bare_{other}") if args.precision == "bf16" else (f"bare_{other}", "bare")
            )
            ratios["bare_bf16/bare_fp32 (bf16 autocast gain)"] = paired(bf16, fp32)
        if not cuda:  # each lever against the eager fp32 loop of its own kind
            for name in names:
                if name.startswith("bare_"):
                    ratios[f"{name}/bare"] = paired(name, "bare")
            ratios[f"engine_{other}/bare"] = paired(f"engine_{other}", "bare")
            ratios[f"engine_{other}/engine"] = paired(f"engine_{other}", "engine")
            ratios[same_other] = paired(f"engine_{other}", bare_same_other)
        ratios = {k: v for k, v in ratios.items() if v is not None}
        # Noise: how much one variant moves between rounds (relative spread, max-min over median).
        spread = {
            k: (max(v) - min(v)) / statistics.median(v) for k, v in vals.items() if len(v) > 1
        }
        return {"values": vals, "median": med, "spread": spread, "ratios": ratios}

    wall, cpu_t = analyse("images_per_sec"), analyse("images_per_cpu_sec")
    for title, res in (
        ("images/s (wall clock)", wall),
        ("images per CPU-second of this process (less sensitive to other jobs' load)", cpu_t),
    ):
        print(f"\n{title}")
        print(f"{'variant':<18}{'median':>10}{'min':>10}{'max':>10}{'spread':>9}")
        for k in names:
            v = res["values"][k]
            print(
                f"{k:<18}{res['median'][k]:10.1f}{min(v):10.1f}{max(v):10.1f}"
                f"{res['spread'].get(k, float('nan')) * 100:8.1f}%"
            )
        print(f"{'ratio':<50}{'median(round)':>14}{'of medians':>12}{'rounds min..max':>18}")
        for k, v in res["ratios"].items():
            print(
                f"{k:<50}{v['median_of_round_ratios']:14.3f}{v['ratio_of_medians']:12.3f}"
                f"{min(v['per_round']):9.3f}..{max(v['per_round']):.3f}"
            )
    target = TARGETS[args.arch]
    verdicts: dict[str, str] = {}
    print()
    for key in ("engine/bare", same_other):  # the engine against the bare loop it mirrors
        if key not in wall["ratios"]:
            continue
        r = wall["ratios"][key]
        ratio, lo, hi = r["median_of_round_ratios"], min(r["per_round"]), max(r["per_round"])
        verdicts[key] = "pass" if ratio >= target else "within noise" if hi >= target else "slower"
        print(
            f"{key} (wall) = {ratio:.3f}, rounds {lo:.3f}..{hi:.3f} "
            f"(target >= {target}): {verdicts[key]}"
        )
        if key in cpu_t["ratios"]:
            print(f"{key} (CPU time) = {cpu_t['ratios'][key]['median_of_round_ratios']:.3f}")
    verdict = verdicts.get("engine/bare")

    out = {
        "benchmark": "train_throughput",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps": steps,
        "warmup": warmup,
        "env": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "loadavg_end": _loadavg(),
            "omp_env": {
                k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "GOMP_"))
            },
        },
        "config_default": base.model_dump(mode="json"),
        "auto_precision": auto,
        "wall_clock": wall,
        "cpu_time": cpu_t,
        "verdict_engine_vs_bare": verdict,
        "target": target,
        "verdicts": verdicts,
        "runs": results,
        "wall_seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)  # the profile files go there too
    if args.profile:
        out["profile"] = profile(
            plain, dataset, images, min(steps, 6) + 1, args.out.parent, args.precision, cuda
        )
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
