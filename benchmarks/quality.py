"""Quality benchmark: the default recipe vs a plain DCGAN loop on Fashion-MNIST.

Both recipes train the same DCGAN generator/discriminator for the same number of steps at
batch 64. The *default recipe* is ``TrainConfig(dataset='fashion-mnist', image_size=28,
steps=..., batch_size=64, seed=...)`` with every other field at its default, trained through
``gan_core.training.train`` and sampled the way the service does (``load_generator(ema=True)``
from the last checkpoint, eval mode). The *plain loop* is written out below as bare PyTorch:
non-saturating BCE, Adam 2e-4 (0.5, 0.999), no EMA, no augmentation, sampled in eval mode.

Both are scored by the same ``gan_core.metrics.QualityScorer``: a small classifier trained here
on the Fashion-MNIST train split (seeded, nothing downloaded), Fréchet distance between its
features of N generated images and of the 10k test images, and how many of the 10 classes
the generated images cover (>= 2% of the samples each).

    .venv/bin/python benchmarks/quality.py --width 32       # docs/benchmarks.md's run: ~20 min, 2 CPU cores
    .venv/bin/python benchmarks/quality.py --width 32 --seed 1 --out benchmarks/results/quality-seed1.json
    .venv/bin/python benchmarks/quality.py --width 64       # width 64: about 3x as long on a CPU
    .venv/bin/python benchmarks/quality.py --quick          # 300 steps, 2,000 samples: smoke run
    .venv/bin/python benchmarks/quality.py --width 32 --precisions fp32,bf16 --no-plain \
        --out benchmarks/results/quality-bf16-w32-seed0.json  # precision: bf16 against fp32

Target: FD(default) <= 0.5 * FD(plain), and the default covers all 10 classes.

The recipe study (``benchmarks/recipes.py``) asks whether a recipe is better per unit of compute, not only
per step: each recipe in RECIPES (overrides of the default config) and the plain loop train
for ``--steps`` G steps, then again for as many steps as fit in the time the default took
(steps x t_default / t_recipe, from the same run), each seed with its own scorer:

    .venv/bin/python benchmarks/recipes.py --width 32 --seeds 0,1 \
        --recipes plain,default,rpgan_r1r2,d_steps2 --out benchmarks/results/recipes-w32.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere without installing
    sys.path.insert(0, str(REPO))

from gan_core.checkpoint import latest_checkpoint, load_generator  # noqa: E402
from gan_core.config import TrainConfig  # noqa: E402
from gan_core.data import DEBIAN_FASHION_MNIST, ImageTensorDataset, load_dataset  # noqa: E402
from gan_core.data.files import read_idx  # noqa: E402
from gan_core.metrics import QualityScorer, classifier_accuracy, train_classifier  # noqa: E402
from gan_core.nets import build_discriminator, build_generator  # noqa: E402
from gan_core.sampling import generate, latents  # noqa: E402
from gan_core.training import train  # noqa: E402

DATASET, IMAGE_SIZE, BATCH = "fashion-mnist", 28, 64
TARGET_RATIO = 0.5
SAMPLE_CHUNK = 500  # images generated per forward pass when sampling in eval mode


# --------------------------------------------------------------------------------- data


def load_test_split(data_dir: Path = DEBIAN_FASHION_MNIST) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10k Fashion-MNIST test images (uint8 (N, 1, 28, 28)) and labels; never trained on."""

    def find(stem: str) -> Path:
        for p in (data_dir / stem, data_dir / f"{stem}.gz"):
            if p.is_file():
                return p
        raise FileNotFoundError(f"{stem}[.gz] not found in {data_dir}")

    images = torch.from_numpy(read_idx(find("t10k-images-idx3-ubyte"), 3)).unsqueeze(1)
    labels = torch.from_numpy(read_idx(find("t10k-labels-idx1-ubyte"), 1)).long()
    return images.contiguous(), labels


def fit_scorer(train_set: ImageTensorDataset, seed: int, epochs: int) -> tuple[QualityScorer, dict]:
    """Train the feature classifier on the train split; reference stats from the test split."""
    t0 = time.monotonic()
    clf = train_classifier(
        train_set.images, train_set.labels, num_classes=10, epochs=epochs, seed=seed
    )
    test_x, test_y = load_test_split()
    scorer = QualityScorer(clf, test_x)
    info = {
        "epochs": epochs,
        "seed": seed,
        "train_images": len(train_set),
        "reference": f"fashion-mnist test split ({len(test_x)} images)",
        "test_accuracy": round(classifier_accuracy(clf, test_x, test_y), 4),
        "seconds": round(time.monotonic() - t0, 1),
    }
    # The floor: a second set of real images (train split) scored against the test reference.
    idx = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:10_000]
    info["real_vs_real"] = scorer.score(train_set.images[idx]).as_dict()
    return scorer, info


# --------------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_eval(G: nn.Module, n: int, seed: int) -> torch.Tensor:
    """n images from G in eval mode (BatchNorm running stats), as the service samples."""
    G = G.eval()
    z = latents(n, G.latent_dim, seed)
    return torch.cat([generate(G, zc, None) for zc in z.split(SAMPLE_CHUNK)])


@torch.no_grad()
def sample_train_mode(G: nn.Module, n: int, seed: int) -> torch.Tensor:
    """n images from G in train mode (BatchNorm batch stats over batches of 64), for reference."""
    G = copy.deepcopy(G).train()  # train mode updates the running stats: work on a copy
    z = latents(n, G.latent_dim, seed)
    return torch.cat([G(zc).float().clamp(-1, 1) for zc in z.split(BATCH)])


# --------------------------------------------------------------------------------- recipes


def default_config(steps: int, seed: int, **overrides) -> TrainConfig:
    """The default recipe: only the dataset, size, steps, batch and seed are set (and
    whatever ``overrides`` sets, the batch size included)."""
    base = {"dataset": DATASET, "image_size": IMAGE_SIZE, "batch_size": BATCH}
    return TrainConfig(**base | {"steps": steps, "seed": seed} | overrides)


def train_default(
    steps: int, seed: int, run_dir: Path, train_set: ImageTensorDataset, **overrides
) -> tuple[Path, TrainConfig, float]:
    """Train the default recipe through gan_core.training.train; (checkpoint, config, seconds)."""
    config = default_config(steps, seed, **overrides)
    t0 = time.monotonic()
    result = train(config, run_dir, dataset=train_set, resume=False)
    seconds = time.monotonic() - t0
    if result.status != "succeeded" or result.checkpoint is None:
        raise RuntimeError(f"default recipe did not finish: {result}")
    return result.checkpoint, result.config, seconds


def plain_nets(width: int | None, seed: int) -> tuple[nn.Module, nn.Module]:
    """The same DCGAN G and D as the default recipe builds (same widths), seeded."""
    widths = {} if width is None else {"g_width": width, "d_width": width}
    # loss='bce' only matters for the critic's norm layers (wgan-gp drops BatchNorm): it
    # gives the same D as the default hinge recipe.
    arch = TrainConfig(dataset=DATASET, image_size=IMAGE_SIZE, channels=1, loss="bce", **widths)
    torch.manual_seed(seed)
    return build_generator(arch), build_discriminator(arch)


def train_plain(
    steps: int, seed: int, train_set: ImageTensorDataset, width: int | None = None
) -> tuple[nn.Module, float]:
    """A bare DCGAN loop: non-saturating BCE, Adam 2e-4 (0.5, 0.999), no EMA, no augmentation."""
    G, D = plain_nets(width, seed)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = train_set.images  # uint8 (N, 1, 28, 28)
    order = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(data), generator=order), 0
    ones, zeros = torch.ones(BATCH), torch.zeros(BATCH)
    G.train()
    D.train()
    t0 = time.monotonic()
    for _ in range(steps):
        if pos + BATCH > len(perm):
            perm, pos = torch.randperm(len(data), generator=order), 0
        real = data[perm[pos : pos + BATCH]].float().div_(127.5).sub_(1.0)  # [-1, 1]
        pos += BATCH
        fake = G(torch.randn(BATCH, G.latent_dim))
        # D: -log D(x) - log(1 - D(G(z)))
        d_loss = F.binary_cross_entropy_with_logits(
            D(real), ones
        ) + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # G: -log D(G(z)) (non-saturating)
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if not torch.isfinite(d_loss + g_loss):
            raise RuntimeError("plain loop diverged (non-finite loss)")
    return G.eval(), time.monotonic() - t0


# --------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else (300 if args.quick else 3000)
    n = args.samples if args.samples is not None else (2000 if args.quick else 10_000)
    clf_epochs = 1 if args.quick else 2
    width = {} if args.width is None else {"g_width": args.width, "d_width": args.width}
    t_all = time.monotonic()

    train_set = load_dataset(DATASET, image_size=IMAGE_SIZE, seed=args.seed)
    print(
        f"fashion-mnist: {len(train_set)} train images; {steps} steps at batch {BATCH}; "
        f"{n} samples; torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    scorer, clf_info = fit_scorer(train_set, args.seed, clf_epochs)
    print(
        f"scorer: classifier test accuracy {clf_info['test_accuracy']:.3f}, real-vs-real FD "
        f"{clf_info['real_vs_real']['fd']:.3f} ({clf_info['seconds']:.0f}s)",
        flush=True,
    )

    results: dict[str, dict] = {}
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for i, precision in enumerate(precisions):
        name = "default" if i == 0 else f"default_{precision}"
        with tempfile.TemporaryDirectory(prefix="ganforge-quality-") as tmp:
            run_dir = Path(args.run_dir) / name if args.run_dir else Path(tmp) / name
            print(f"training the default recipe ({precision}) ...", flush=True)
            ckpt_dir, config, secs = train_default(
                steps, args.seed, run_dir, train_set, precision=precision, **width
            )
            assert latest_checkpoint(run_dir) == ckpt_dir
            G_ema = load_generator(ckpt_dir, ema=True)  # the service's sampling path
            G_raw = load_generator(ckpt_dir, ema=False)
            results[name] = {
                "train_seconds": round(secs, 1),
                "config": config.model_dump(mode="json"),
                **scorer.score(sample_eval(G_ema, n, args.seed)).as_dict(),
                "diagnostics": {
                    "raw_G_eval": scorer.score(sample_eval(G_raw, n, args.seed)).as_dict(),
                    "ema_G_train_mode": scorer.score(
                        sample_train_mode(G_ema, n, args.seed)
                    ).as_dict(),
                },
            }
        print(f"  {name}: FD {results[name]['fd']:.3f}, {secs:.0f}s", flush=True)
    extra = {k: v for k, v in results.items() if k != "default"}

    if args.no_plain:
        return {
            "benchmark": "quality",
            "dataset": DATASET,
            "steps": steps,
            "seed": args.seed,
            "width": args.width or TrainConfig.model_fields["g_width"].default,
            "samples": n,
            "scorer": clf_info,
            **results,
            "total_seconds": round(time.monotonic() - t_all, 1),
        }

    print("training the plain DCGAN loop ...", flush=True)
    G_plain, secs = train_plain(steps, args.seed, train_set, args.width)
    results["plain"] = {
        "train_seconds": round(secs, 1),
        "recipe": "bare loop: BCE (non-saturating), Adam 2e-4 (0.5, 0.999), no EMA, no augment",
        **scorer.score(sample_eval(G_plain, n, args.seed)).as_dict(),
        "diagnostics": {
            "train_mode": scorer.score(sample_train_mode(G_plain, n, args.seed)).as_dict(),
        },
    }
    print(f"  plain: FD {results['plain']['fd']:.3f}, {secs:.0f}s", flush=True)

    d, p = results["default"], results["plain"]
    ratio = d["fd"] / p["fd"] if p["fd"] > 0 else float("inf")
    g_width = TrainConfig.model_fields["g_width"].default if args.width is None else args.width
    return {
        "benchmark": "quality",
        "dataset": DATASET,
        "image_size": IMAGE_SIZE,
        "steps": steps,
        "batch_size": BATCH,
        "seed": args.seed,
        "width": g_width,
        "samples": n,
        "quick": bool(args.quick),
        "scorer": clf_info,
        "default": d,
        **extra,
        "plain": p,
        "ratio_default_over_plain": round(ratio, 4),
        "target": {"max_ratio": TARGET_RATIO, "classes_covered": 10},
        "target_met": ratio <= TARGET_RATIO and d["classes_covered"] == d["num_classes"],
        "total_seconds": round(time.monotonic() - t_all, 1),
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


def print_table(r: dict) -> None:
    rows = [
        ("default recipe (EMA G, eval)", r["default"]),
        ("plain DCGAN loop (G, eval)", r["plain"]),
    ]
    print()
    print(
        f"Fashion-MNIST 28px, {r['steps']} steps x batch {r['batch_size']}, width {r['width']}, "
        f"seed {r['seed']}, {r['samples']} samples vs {r['scorer']['reference']}"
    )
    print(f"{'recipe':<32} {'FD':>9} {'classes':>8} {'train time':>11}")
    for name, x in rows:
        cov = f"{x['classes_covered']}/{x['num_classes']}"
        print(f"{name:<32} {x['fd']:>9.3f} {cov:>8} {x['train_seconds']:>10.0f}s")
    print(f"{'ratio default / plain':<32} {r['ratio_default_over_plain']:>9.3f}")
    print("diagnostics:")
    print(
        f"  {'default, raw G (eval)':<30} FD {r['default']['diagnostics']['raw_G_eval']['fd']:.3f}"
    )
    print(
        f"  {'default, EMA G (train mode)':<30} FD "
        f"{r['default']['diagnostics']['ema_G_train_mode']['fd']:.3f}"
    )
    print(f"  {'plain, G (train mode)':<30} FD {r['plain']['diagnostics']['train_mode']['fd']:.3f}")
    print(f"  {'real vs real (floor)':<30} FD {r['scorer']['real_vs_real']['fd']:.3f}")
    verdict = "MET" if r["target_met"] else "NOT met"
    print(f"target (ratio <= {TARGET_RATIO}, 10/10 classes): {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="G steps per recipe (default 3000)")
    ap.add_argument("--seed", type=int, default=0, help="training, classifier and sampling seed")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 300 steps, 2000 samples, 1 classifier epoch",
    )
    ap.add_argument("--samples", type=int, default=None, help="generated images scored (10000)")
    ap.add_argument(
        "--width",
        type=int,
        default=None,
        help="g_width = d_width for BOTH recipes (default: TrainConfig's, 64)",
    )
    ap.add_argument(
        "--precisions",
        default="fp32",
        help="train the default recipe in each of these (e.g. fp32,bf16); the first is `default`",
    )
    ap.add_argument("--no-plain", action="store_true", help="skip the plain loop")
    ap.add_argument("--run-dir", default=None, help="keep the default recipe's runs here")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/quality.json")
    args = ap.parse_args(argv)
    result = run(args)
    if "plain" in result:
        print_table(result)
    for name in (k for k in result if k.startswith("default")):
        r = result[name]
        print(
            f"{name:<16} FD {r['fd']:.3f} (raw G {r['diagnostics']['raw_G_eval']['fd']:.3f}), "
            f"classes {r['classes_covered']}/{r['num_classes']}, {r['train_seconds']:.0f}s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
