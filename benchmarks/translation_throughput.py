"""Training throughput of translation jobs: the engine against a bare loop of the same nets.

For each kind (paired: pix2pix's U-Net + conditional PatchGAN, BCE + lambda_l1 * L1;
unpaired: CycleGAN's two ResNet generators + two PatchGANs, LSGAN + cycle + identity losses
and an image pool of 50) and each precision (fp32; bf16 autocast, in channels_last where the
CPU has native bf16, as the engine does), two loops train in this one process, interleaved
round by round (the order rotates), so machine load hits both alike:

  engine  gan_core.training.train on parse_config({"kind": ..., ...}): the RunKind's
          PairBatcher, TranslationState and Paired/UnpairedStep, plus the loop's
          bookkeeping (loss window and NaN checks, progress reports, stop checks); timed
          between two of its progress reports, the final checkpoint save not timed
  bare    a hand-written loop of the same maths as gan_core/translation/steps.py: the same
          nets (built in the same order from the same seed), losses, Adam optimizers, learning
          rate schedule, D frozen for G's backward, the same image pool algorithm (unpaired),
          the same training split indexed by a plain randperm; no monitor, no checkpoints,
          no progress, no state objects

Images/s counts the examples of a batch per step (unpaired: one A and one B image each).
Only steady state is timed: the first --warmup steps of every run are skipped. The headline
is engine/bare, the median over rounds of the per-round ratio (target >= 0.95).

    .venv/bin/python benchmarks/translation_throughput.py                   # ~10 min on 2 cores
    .venv/bin/python benchmarks/translation_throughput.py --kinds paired --precisions fp32 \
        --rounds 2 --steps 4                                                # quicker
"""

from __future__ import annotations

import argparse
import contextlib
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
from torch.nn import functional as F  # noqa: E402

from benchmarks._train_loops import run_engine  # noqa: E402
from gan_core.data.pairs import Domain, PairDataset, load_pairs, validation_names  # noqa: E402
from gan_core.inference import cpu_has_fast_bf16  # noqa: E402
from gan_core.jobconfig import parse_config  # noqa: E402
from gan_core.translation.config import TranslationConfig  # noqa: E402
from gan_core.translation.nets import build_patch_discriminator, build_translator  # noqa: E402
from gan_core.translation.run import resolve_translation_config  # noqa: E402


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def unpaired_data(size: int) -> PairDataset:
    """Two domains from the built-in of pairs, unpaired: A = the shapes photos of one half,
    B = the other half's with their colour channels reversed (both RGB, so the identity loss
    is on, as CycleGAN's default)."""
    pairs = load_pairs("shapes-edges", image_size=size, seed=0)
    photos, names = pairs.b.images, pairs.b.names
    half = len(names) // 2

    def domain(images: torch.Tensor, stems: tuple[str, ...], where: str) -> Domain:
        return Domain(images, stems, validation_names(stems, 0, where), size)

    a = domain(photos[:half].clone(), tuple(f"a{n}" for n in names[:half]), "A")
    b = domain(photos[half:].flip(1).clone(), tuple(f"b{n}" for n in names[half:]), "B")
    return PairDataset("shapes-unpaired", a, b, paired=False)


# ----------------------------------------------------------------------------- bare loop


def run_bare(
    config: TranslationConfig, data: PairDataset, warmup: int, steps: int, channels_last: bool
) -> dict:
    """The textbook loop of ``config``'s kind (see the module doc)."""
    assert config.channels_a is not None and config.channels_b is not None
    ca, cb, size, paired = config.channels_a, config.channels_b, config.image_size, data.paired
    torch.manual_seed(config.seed)
    G_ab = build_translator(config.generator, ca, cb, size, config.g_width)
    D_b = build_patch_discriminator(
        cb, size, config.d_width, condition_channels=ca if paired else 0
    )
    gens, discs = [G_ab], [D_b]
    if not paired:
        G_ba = build_translator(config.generator, cb, ca, size, config.g_width)
        D_a = build_patch_discriminator(ca, size, config.d_width)
        gens.append(G_ba)
        discs.append(D_a)
    for net in gens + discs:
        net.train()
        if channels_last:
            net.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(
        [p for g in gens for p in g.parameters()], lr=config.g_lr, betas=config.g_betas
    )
    opt_d = torch.optim.Adam(
        [p for d in discs for p in d.parameters()], lr=config.d_lr, betas=config.d_betas
    )
    amp = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if config.precision == "bf16"
        else contextlib.nullcontext
    )
    a_train, b_train = data.a.split()[0], data.b.split()[0]
    B = config.batch_size

    def sampler(n: int):
        perm, pos = torch.randperm(n), 0

        def take() -> torch.Tensor:
            nonlocal perm, pos
            if pos + B > n:
                perm, pos = torch.randperm(n), 0
            pos += B
            return perm[pos - B : pos]

        return take

    def as_input(x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(127.5).sub_(1.0)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def set_lr(step: int) -> None:
        if config.lr_schedule != "constant":
            f = config.lr_factor(step)
            for opt, lr in ((opt_g, config.g_lr), (opt_d, config.d_lr)):
                for group in opt.param_groups:
                    group["lr"] = lr * f

    def freeze(flag: bool) -> None:
        for d in discs:
            d.requires_grad_(flag)

    def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if paired:
        take = sampler(len(a_train))
        lam = config.lambda_l1  # type: ignore[attr-defined]

        def step(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            set_lr(i)
            idx = take()
            a, b = as_input(a_train[idx]), as_input(b_train[idx])
            with amp():
                fake = G_ab(a)
                real_l, fake_l = D_b(b, a).float(), D_b(fake.detach(), a).float()
                d_loss = 0.5 * (F.softplus(-real_l).mean() + F.softplus(fake_l).mean())
            update(opt_d, d_loss)
            freeze(False)
            with amp():
                adv = F.softplus(-D_b(fake, a).float()).mean()
            g_loss = adv + lam * F.l1_loss(fake.float(), b)
            update(opt_g, g_loss)
            freeze(True)
            return d_loss.detach(), g_loss.detach()

    else:
        take_a, take_b = sampler(len(a_train)), sampler(len(b_train))
        lam, lam_id = config.lambda_cycle, config.lambda_identity  # type: ignore[attr-defined]
        pools: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        pool_size = config.pool_size  # type: ignore[attr-defined]

        def query(pool: list[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
            # CycleGAN's ImagePool.query, as the reference code writes it
            if pool_size == 0:
                return batch
            out = []
            for image in batch.detach().float():
                image = image.unsqueeze(0)
                if len(pool) < pool_size:
                    pool.append(image.clone())
                    out.append(image)
                elif float(torch.rand(())) < 0.5:
                    j = int(torch.randint(0, pool_size, ()))
                    out.append(pool[j].clone())
                    pool[j] = image.clone()
                else:
                    out.append(image)
            return torch.cat(out, dim=0)

        def ls_g(x: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((x.float() - 1.0) ** 2).mean()

        def ls_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((real.float() - 1.0) ** 2).mean() + 0.5 * (fake.float() ** 2).mean()

        def step(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            set_lr(i)
            a, b = as_input(a_train[take_a()]), as_input(b_train[take_b()])
            freeze(False)
            with amp():
                fake_b, fake_a = G_ab(a), G_ba(b)
                adv = ls_g(D_b(fake_b)) + ls_g(D_a(fake_a))
                rec_a, rec_b = G_ba(fake_b), G_ab(fake_a)
            g_loss = adv + lam * (F.l1_loss(rec_a.float(), a) + F.l1_loss(rec_b.float(), b))
            if lam_id:
                with amp():
                    same_b, same_a = G_ab(b), G_ba(a)
                g_loss = g_loss + lam * lam_id * (
                    F.l1_loss(same_b.float(), b) + F.l1_loss(same_a.float(), a)
                )
            update(opt_g, g_loss)
            freeze(True)
            with amp():
                d_loss = ls_d(D_b(b), D_b(query(pools[1], fake_b.detach()))) + ls_d(
                    D_a(a), D_a(query(pools[0], fake_a.detach()))
                )
            update(opt_d, d_loss)
            return d_loss.detach(), g_loss.detach()

    total = warmup + steps
    for i in range(warmup):
        step(i)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(warmup, total):
        d, g = step(i)
    losses = torch.stack([d, g]).float()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not torch.isfinite(losses).all():
        raise RuntimeError(f"bare loop diverged: {losses.tolist()}")
    return {
        "images_per_sec": steps * B / dt,
        "images_per_cpu_sec": steps * B / cpu,
        "timed_steps": steps,
        "seconds": dt,
        "cpu_seconds": cpu,
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kinds", default="paired,unpaired")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run after the warm-up")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of engine and bare")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4, help="the configs' default")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    ap.add_argument("--progress-interval", type=float, default=0.0)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/translation_throughput.json"
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    datasets = {
        "paired": load_pairs("shapes-edges", image_size=args.image_size, seed=0),
        "unpaired": unpaired_data(args.image_size),
    }
    fast_bf16 = cpu_has_fast_bf16()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, native bf16 {fast_bf16}, "
        f"{args.image_size}px batch {args.batch_size}, {args.warmup} warm-up + {args.steps} "
        f"timed steps, {args.rounds} rounds; load {_loadavg()}",
        flush=True,
    )
    cases: dict[str, tuple[TranslationConfig, PairDataset, bool]] = {}
    for kind in kinds:
        for precision in precisions:
            cfg = parse_config(
                {
                    "kind": kind,
                    "dataset": "shapes-edges",
                    "image_size": args.image_size,
                    "batch_size": args.batch_size,
                    "precision": precision,
                    "device": "cpu",
                    "steps": args.warmup + args.steps,
                    "checkpoint_every": args.warmup + args.steps,
                    "keep_checkpoints": 1,
                }
            )
            assert isinstance(cfg, TranslationConfig)
            data = datasets[kind]
            cfg = resolve_translation_config(cfg, data)
            # the engine's layout (gan_core.translation.state._uses_channels_last on CPU)
            channels_last = precision == "bf16" and fast_bf16
            cases[f"{kind}_{precision}"] = (cfg, data, channels_last)

    results: dict[str, dict[str, list[dict]]] = {c: {"engine": [], "bare": []} for c in cases}
    for r in range(args.rounds):
        for case, (cfg, data, cl) in cases.items():
            order = ["engine", "bare"] if r % 2 == 0 else ["bare", "engine"]
            for name in order:
                if name == "engine":
                    res = run_engine(cfg, data, args.warmup, args.steps, args.progress_interval)  # type: ignore[arg-type]
                else:
                    res = run_bare(cfg, data, args.warmup, args.steps, cl)
                res["loadavg"] = _loadavg()
                results[case][name].append(res)
                print(
                    f"  round {r + 1}/{args.rounds} {case:<16} {name:<7}"
                    f"{res['images_per_sec']:8.2f} img/s  {res['images_per_cpu_sec']:8.2f} "
                    f"img/CPU-s  ({res['timed_steps']} steps in {res['seconds']:.2f}s, "
                    f"load {res['loadavg'][0]})",
                    flush=True,
                )

    summary: dict[str, dict] = {}
    print(
        f"\n{'case':<16}{'engine img/s':>13}{'bare img/s':>12}{'engine/bare':>13}"
        f"{'rounds':>16}{'per CPU-s':>11}  target >= 0.95"
    )
    for case, res in results.items():
        ratios = {}
        for metric in ("images_per_sec", "images_per_cpu_sec"):
            e = [x[metric] for x in res["engine"]]
            b = [x[metric] for x in res["bare"]]
            per_round = [x / y for x, y in zip(e, b, strict=True)]
            ratios[metric] = {
                "engine_median": statistics.median(e),
                "bare_median": statistics.median(b),
                "median_of_round_ratios": statistics.median(per_round),
                "per_round": per_round,
            }
        wall, cpu = ratios["images_per_sec"], ratios["images_per_cpu_sec"]
        ok = wall["median_of_round_ratios"] >= 0.95
        summary[case] = {"wall": wall, "cpu": cpu, "target_0.95_met": ok}
        print(
            f"{case:<16}{wall['engine_median']:13.2f}{wall['bare_median']:12.2f}"
            f"{wall['median_of_round_ratios']:13.3f}"
            f"{min(wall['per_round']):8.3f}..{max(wall['per_round']):.3f}"
            f"{cpu['median_of_round_ratios']:11.3f}  {'met' if ok else 'NOT met'}"
        )
    out = {
        "benchmark": "translation_throughput",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or "cpu",
            "native_bf16": fast_bf16,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "loadavg_end": _loadavg(),
            "omp_env": {
                k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "GOMP_"))
            },
        },
        "configs": {c: cfg.model_dump(mode="json") for c, (cfg, _, _) in cases.items()},
        "summary": summary,
        "runs": results,
        "wall_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
