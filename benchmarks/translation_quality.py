"""Translation quality benchmark (issue 18): pix2pix on edges -> Fashion-MNIST, CycleGAN on two
Fashion-MNIST classes, each against the untrained model and copying the input.

**Paired.** A is the Sobel edge map of a Fashion-MNIST image (the recipe of
``gan_core.data.pairs.make_shapes_edges``: 3x3 Sobel on the grey image with replicate padding,
gradient magnitude scaled by each image's peak), B the image itself, both resized to 32 px
(bilinear with antialias, as ``gan_core.data.load_dataset`` resizes). The job trains on the
train split's pairs and is judged on all 10,000 test pairs: the pairs are one
``PairDataset`` whose held-out names are the test split's, so the engine trains on the train
split alone (``gan_core.training.train``, a ``PairedConfig``) and the translation scorer
judges the test split. The translator is loaded from the last checkpoint as the service
loads it (``load_translator``, eval mode) and run with ``translate`` (uint8 out).

**Unpaired.** Two classes of Fashion-MNIST as the domains (default sneaker (7) -> ankle boot
(9): the same view of a shoe, without and with a shaft), train split to train, test split to
judge, an ``UnpairedConfig`` through the same engine.

Judged, for each model (trained; untrained: the run's own initial weights, the nets
``TranslationState`` builds for the resolved config; copy-input: the edge map, or the A image,
as the output):

- ``clf_accuracy`` (paired): accuracy of a 10-class classifier on the translations of the test
  edge maps, against the test labels; the classifier (``gan_core.metrics.train_classifier``,
  the engine's recipe for a labelled dataset) is trained on the real 32 px train split and its
  accuracy on the real test images is the yardstick (target: within 10 points of it).
  ``as_target`` / ``as_source`` (unpaired): the share of translated test A images the
  classifier calls B / still calls A.
- ``fd_clf``: Fréchet distance of the classifier's features (the features the engine scores a
  labelled Fashion-MNIST with) between the translations and the real test targets (paired:
  all 10,000 test images; unpaired: the test split's images of the target class).
- ``scorer``: what ``gan_core.metrics.translation.TranslationScorer`` reports for the held-out
  (test) split, as the worker scores a translation checkpoint: ``fd``/``kid`` in the target
  domain's own rotation-prediction features against its training images, and for pairs
  ``l1`` (pixels on [-1, 1]), ``psnr`` (dB) and ``ssim`` against the true images; unpaired
  also ``fd_b2a``/``kid_b2a``.

Floors in the JSON: the real test images themselves (accuracy, and FD of 10,000 real *train*
images to the test images in classifier features; the scorer's ``baseline`` holds the real
held-out targets' ``fd``).

    .venv/bin/python benchmarks/translation_quality.py --seed 0     # both tasks, seed 0: ~45 min here

docs/benchmarks.md's runs (the unpaired U-Net runs came first; the ResNet generator, now the
default here as in CycleGAN, was then run alone):

    .venv/bin/python benchmarks/translation_quality.py --seed S --unpaired-generator unet \\
        --unpaired-width 16 --unpaired-steps 2500 \\
        --out benchmarks/results/translation_quality-seedS.json     # S = 0, 1
    .venv/bin/python benchmarks/translation_quality.py --seed S --tasks unpaired \\
        --out benchmarks/results/translation_quality-unpaired-resnet-seedS.json
    .venv/bin/python benchmarks/translation_quality.py --report \\
        benchmarks/results/translation_quality-seed*.json            # the tables, as markdown
    .venv/bin/python benchmarks/translation_quality.py --quick      # smoke run: minutes

Each invocation trains one seed of each task (``--tasks paired,unpaired``); classifier and
scorers are seeded with ``--scorer-seed`` (0), so runs of different seeds are scored alike.
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
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere without installing
    sys.path.insert(0, str(REPO))

import torch._dynamo  # noqa: E402, F401  (Adam imports it on first use: keep that out of the timings)

from benchmarks._translation_data import (  # noqa: E402
    SIZE,
    load_split,
    paired_data,
    unpaired_data,
)
from benchmarks._translation_judging import (  # noqa: E402
    classifier,
    judge_paired,
    judge_unpaired,
    rounded,
)
from gan_core.checkpoint import list_checkpoints, read_meta  # noqa: E402
from gan_core.data.pairs import PairDataset  # noqa: E402
from gan_core.metrics import classifier_accuracy  # noqa: E402
from gan_core.metrics.features import predict  # noqa: E402
from gan_core.metrics.scoring import QualityScorer  # noqa: E402
from gan_core.metrics.translation import TranslationScorer  # noqa: E402
from gan_core.training import train  # noqa: E402
from gan_core.translation.config import PairedConfig, UnpairedConfig  # noqa: E402
from gan_core.translation.inference import load_translator  # noqa: E402
from gan_core.translation.run import resolve_translation_config  # noqa: E402
from gan_core.translation.state import TranslationState  # noqa: E402

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
TARGET_POINTS = 10.0  # paired: translations' accuracy within this many points of the real images'


# --------------------------------------------------------------------------------- models


class CopyInput(nn.Module):
    """The do-nothing translator: its output is its input."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # translate() asks

    def forward(self, x: Tensor) -> Tensor:
        return x


def untrained(config: PairedConfig | UnpairedConfig, data: PairDataset) -> dict[str, nn.Module]:
    """The nets a run of this config starts from (same seed, same builder), in eval mode."""
    state = TranslationState(resolve_translation_config(config, data), torch.device("cpu"))
    names = {"a2b": "G_ab", "b2a": "G_ba"}
    return {
        d: state.generators[g].eval().requires_grad_(False)
        for d, g in names.items()
        if g in state.generators
    }


def train_run(
    config: PairedConfig | UnpairedConfig, data: PairDataset, run_dir: Path
) -> tuple[dict[str, dict[str, nn.Module]], float, dict]:
    """Train; the translators of each checkpoint ('trained' the last, 'trained_at_<step>'
    the others: checkpoint_every is half the steps, so one at the midpoint)."""
    t0, cpu0 = time.monotonic(), time.process_time()
    result = train(config, run_dir, dataset=data, resume=False)
    seconds = time.monotonic() - t0
    print(f"  trained in {seconds:.0f}s wall, {time.process_time() - cpu0:.0f}s CPU", flush=True)
    if result.status != "succeeded" or result.checkpoint is None:
        raise RuntimeError(f"training did not finish: {result}")
    models = {}
    for ckpt_dir in list_checkpoints(run_dir):
        step = int(read_meta(ckpt_dir, verify=False)["step"])
        name = "trained" if step == config.steps else f"trained_at_{step}"
        models[name] = {d: load_translator(ckpt_dir, d) for d in config.directions}
    return models, seconds, result.config.model_dump(mode="json")


# --------------------------------------------------------------------------------- tasks


def paired_task(args: argparse.Namespace, train_xy, test_xy, clf, run_root: Path) -> dict:
    train_x = train_xy[0][: args.train_images] if args.train_images else train_xy[0]
    test_x, test_y = test_xy
    data = paired_data(train_x, test_x)
    t0 = time.monotonic()
    scorer = TranslationScorer.fit(data, seed=args.scorer_seed, epochs=args.scorer_epochs)
    fd_clf = QualityScorer(clf, test_x)
    scorer_seconds = time.monotonic() - t0
    config = PairedConfig(
        dataset="fashion-mnist-edges",
        image_size=SIZE,
        g_width=args.paired_width,
        d_width=args.paired_width,
        batch_size=args.paired_batch,
        steps=args.paired_steps,
        checkpoint_every=max(args.paired_steps // 2, 1),
        seed=args.seed,
        precision="fp32",  # as recorded (before precision: auto became the default)
    )
    print(
        f"paired: {len(train_x)} train pairs, {len(test_x)} test pairs; "
        f"{config.steps} steps x batch {config.batch_size}, width {config.g_width}",
        flush=True,
    )
    models: dict[str, nn.Module] = {
        "untrained": untrained(config, data)["a2b"],
        "copy_input": CopyInput(),
    }
    trained, seconds, resolved = train_run(config, data, run_root / "paired")
    models.update({name: nets["a2b"] for name, nets in trained.items()})
    results = judge_paired(models, scorer, clf, fd_clf, test_y)
    real_acc = classifier_accuracy(clf, test_x, test_y)
    gap = 100 * (real_acc - results["trained"]["clf_accuracy"])
    return {
        "task": "edges -> fashion-mnist 32px (pix2pix)",
        "train_pairs": len(train_x),
        "test_pairs": len(test_x),
        "config": resolved,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / config.steps, 4),
        "real_test": {"clf_accuracy": round(real_acc, 4)},
        "scorer_baseline": rounded(scorer.baseline),
        "scorer_seconds": round(scorer_seconds, 1),
        **results,
        "accuracy_gap_points": round(gap, 2),
        "target": f"trained accuracy within {TARGET_POINTS:g} points of the real test images'",
        "target_met": gap <= TARGET_POINTS,
    }


def unpaired_task(args: argparse.Namespace, train_xy, test_xy, clf, run_root: Path) -> dict:
    a_cls, b_cls = args.classes
    data = unpaired_data(train_xy, test_xy, a_cls, b_cls)
    t0 = time.monotonic()
    scorer = TranslationScorer.fit(data, seed=args.scorer_seed, epochs=args.scorer_epochs)
    test_x, test_y = test_xy
    fd_a = QualityScorer(clf, test_x[test_y == a_cls])
    fd_b = QualityScorer(clf, test_x[test_y == b_cls])
    scorer_seconds = time.monotonic() - t0
    config = UnpairedConfig(
        dataset="fashion-mnist-classes",
        image_size=SIZE,
        generator=args.unpaired_generator,
        g_width=args.unpaired_width,
        d_width=args.unpaired_width,
        batch_size=args.unpaired_batch,
        steps=args.unpaired_steps,
        checkpoint_every=max(args.unpaired_steps // 2, 1),
        seed=args.seed,
        precision="fp32",  # as recorded (before precision: auto became the default)
    )
    print(
        f"unpaired: {CLASSES[a_cls]} ({len(data.a)}) <-> {CLASSES[b_cls]} ({len(data.b)}); "
        f"{config.generator} width {config.g_width}, {config.steps} steps x batch "
        f"{config.batch_size}",
        flush=True,
    )
    copy = CopyInput()
    models = {"untrained": untrained(config, data), "copy_input": {"a2b": copy, "b2a": copy}}
    trained, seconds, resolved = train_run(config, data, run_root / "unpaired")
    models.update(trained)
    results = judge_unpaired(models, scorer, clf, fd_a, fd_b, (a_cls, b_cls))
    real = {}
    for direction, dst in (("a2b", b_cls), ("b2a", a_cls)):
        held_target = scorer.held_out[direction][1]  # real test images of the target class
        pred = predict(clf.eval(), held_target)
        real[direction] = {
            "target_classified_as_target": round((pred == dst).float().mean().item(), 4)
        }
    # the floor of fd_clf: the train split's images of the class against its test images
    real["a2b"]["fd_clf_train_vs_test"] = round(fd_b.score(train_xy[0][train_xy[1] == b_cls]).fd, 4)
    real["b2a"]["fd_clf_train_vs_test"] = round(fd_a.score(train_xy[0][train_xy[1] == a_cls]).fd, 4)
    return {
        "task": f"{CLASSES[a_cls]} <-> {CLASSES[b_cls]} (CycleGAN)",
        "classes": {"a": [a_cls, CLASSES[a_cls]], "b": [b_cls, CLASSES[b_cls]]},
        "train_images": {
            "a": len(data.a) - len(data.a.val_names),
            "b": len(data.b) - len(data.b.val_names),
        },
        "test_images": {"a": len(data.a.val_names), "b": len(data.b.val_names)},
        "config": resolved,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / config.steps, 4),
        "real_test": real,
        "scorer_baseline": rounded(scorer.baseline),
        "scorer_seconds": round(scorer_seconds, 1),
        **results,
    }


# --------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    t_all = time.monotonic()
    train_xy, test_xy = load_split("train"), load_split("t10k")
    if args.test_images:
        test_xy = (test_xy[0][: args.test_images], test_xy[1][: args.test_images])
    t0 = time.monotonic()
    clf = classifier(args, *train_xy)
    real_acc = classifier_accuracy(clf, *test_xy)
    fd_floor = QualityScorer(clf, test_xy[0]).score(train_xy[0][:10_000]).fd
    clf_info = {
        "train_images": len(train_xy[0]),
        "epochs": args.clf_epochs,
        "seed": args.scorer_seed,
        "test_accuracy": round(real_acc, 4),
        "fd_clf_real_train_10k_vs_test": round(fd_floor, 4),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(
        f"classifier: test accuracy {real_acc:.4f}, FD real train vs test {fd_floor:.4f} "
        f"({clf_info['seconds']:.0f}s); {torch.get_num_threads()} thread(s)",
        flush=True,
    )
    out: dict = {
        "benchmark": "translation_quality",
        "seed": args.seed,
        "image_size": SIZE,
        "classifier": clf_info,
    }
    with tempfile.TemporaryDirectory(prefix="ganforge-tq-") as tmp:
        run_root = Path(args.run_dir) if args.run_dir else Path(tmp)
        if "paired" in args.tasks:
            out["paired"] = paired_task(args, train_xy, test_xy, clf, run_root)
        if "unpaired" in args.tasks:
            out["unpaired"] = unpaired_task(args, train_xy, test_xy, clf, run_root)
    out["total_seconds"] = round(time.monotonic() - t_all, 1)
    out["command"] = "benchmarks/translation_quality.py " + " ".join(sys.argv[1:])
    out["environment"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu(),
    }
    return out


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        "?",
    )
    return f"{model}, avx512_bf16 {'yes' if 'avx512_bf16' in info else 'no'}"


def report(paths: list[Path]) -> str:
    """Markdown tables of result files (one per seed), as docs/benchmarks.md shows them."""
    runs = [json.loads(p.read_text()) for p in paths]
    lines: list[str] = []
    paired = [r for r in runs if "paired" in r]
    if paired:
        acc = ", ".join(f"{r['classifier']['test_accuracy']:.3f}" for r in paired)
        lines += [
            f"| seed | model | accuracy (real: {acc}) | FD clf | scorer FD | L1 | PSNR dB "
            "| SSIM | train time |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for r in paired:
        p = r["paired"]
        names = ["untrained", "copy_input"] + sorted(k for k in p if k.startswith("trained_at_"))
        for name in names + ["trained"]:
            x, s = p[name], p[name]["scorer"]
            t = f"{p['train_seconds']:.0f} s" if name == "trained" else ""
            lines.append(
                f"| {r['seed']} | {name} | {x['clf_accuracy']:.3f} | {x['fd_clf']:.2f} "
                f"| {s['fd']:.3f} | {s['l1']:.3f} | {s['psnr']:.2f} | {s['ssim']:.3f} | {t} |"
            )
    unpaired = [r for r in runs if "unpaired" in r]
    if unpaired:
        lines += [
            *([""] if lines else []),
            "| seed | model | A→B called B (still A) | FD clf to real B | B→A called A (still B) "
            "| FD clf to real A | scorer FD A→B / B→A | train time |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for r in unpaired:
        u = r["unpaired"]
        names = ["untrained", "copy_input"] + sorted(k for k in u if k.startswith("trained_at_"))
        for name in names + ["trained"]:
            x = u[name]
            a, b, s = x["a2b"], x["b2a"], x["scorer"]
            t = f"{u['train_seconds']:.0f} s" if name == "trained" else ""
            lines.append(
                f"| {r['seed']} | {name} ({u['config']['generator']}) "
                f"| {a['as_target']:.3f} ({a['as_source']:.3f}) "
                f"| {a['fd_clf']:.2f} | {b['as_target']:.3f} ({b['as_source']:.3f}) "
                f"| {b['fd_clf']:.2f} | {s['fd']:.3f} / {s['fd_b2a']:.3f} | {t} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, nargs="+", help="print the tables of these results")
    ap.add_argument("--seed", type=int, default=0, help="training seed of both tasks")
    ap.add_argument("--tasks", default="paired,unpaired", help="paired, unpaired or both")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="smoke run: few steps, 2,000 test images")
    ap.add_argument("--paired-steps", type=int, default=None, help="(2000)")
    ap.add_argument("--paired-width", type=int, default=32, help="g_width = d_width (32)")
    ap.add_argument("--paired-batch", type=int, default=16)
    ap.add_argument("--unpaired-steps", type=int, default=None, help="(1000)")
    ap.add_argument("--unpaired-generator", choices=("unet", "resnet"), default="resnet")
    ap.add_argument("--unpaired-width", type=int, default=16, help="g_width = d_width (16)")
    ap.add_argument("--unpaired-batch", type=int, default=8)
    ap.add_argument("--classes", default="7,9", help="domain A and B classes (7,9: sneaker, boot)")
    ap.add_argument("--train-images", type=int, default=None, help="paired: first N train pairs")
    ap.add_argument("--test-images", type=int, default=None, help="first N test images (10000)")
    ap.add_argument("--clf-epochs", type=int, default=2, help="classifier epochs (2)")
    ap.add_argument(
        "--scorer-epochs", type=int, default=None, help="rotation extractors' (service's)"
    )
    ap.add_argument("--scorer-seed", type=int, default=0)
    ap.add_argument("--classifier-cache", type=Path, default=None, help="load/save it here")
    ap.add_argument("--run-dir", default=None, help="keep the runs' checkpoints here")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/translation_quality.json"
    )
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.classes = tuple(int(c) for c in args.classes.split(","))
    if len(args.classes) != 2 or args.classes[0] == args.classes[1]:
        ap.error("--classes takes two different class numbers, e.g. 7,9")
    if args.paired_steps is None:
        args.paired_steps = 40 if args.quick else 2000
    if args.unpaired_steps is None:
        args.unpaired_steps = 40 if args.quick else 1000
    if args.quick:
        args.test_images = args.test_images or 2000
        args.train_images = args.train_images or 5000
        args.clf_epochs, args.scorer_epochs = 1, args.scorer_epochs or 1
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
