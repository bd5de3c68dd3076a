"""How benchmarks/translation_quality.py judges translators: a 10-class classifier of the
real images (accuracy and FD in its features) beside the service's TranslationScorer, on
translations made as the service makes them."""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from gan_core.metrics import classifier_accuracy, train_classifier
from gan_core.metrics.features import FeatureClassifier, predict
from gan_core.metrics.files import load_classifier, save_classifier
from gan_core.metrics.scoring import QualityScorer
from gan_core.metrics.translation import TranslationScorer
from gan_core.translation.inference import translate

CHUNK = 500  # images per forward pass when translating


def run_translation(
    model: nn.Module, images: Tensor
) -> Tensor:  # uint8 in, uint8 out, as the service translates
    return torch.cat([translate(model, c) for c in images.split(CHUNK)])


def classifier(args: argparse.Namespace, train_x: Tensor, train_y: Tensor) -> FeatureClassifier:
    """The 10-class classifier on the real 32 px train split (cached in --classifier-cache)."""
    cache = args.classifier_cache
    if cache is not None and cache.is_file():
        return load_classifier(cache)
    clf = train_classifier(
        train_x, train_y, num_classes=10, epochs=args.clf_epochs, seed=args.scorer_seed
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_classifier(clf, cache)
    return clf


def rounded(d: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}


def judge_paired(
    models: dict[str, nn.Module],
    scorer: TranslationScorer,
    clf: FeatureClassifier,
    fd_clf: QualityScorer,
    test_y: Tensor,
) -> dict[str, dict]:
    inputs = scorer.held_out["a2b"][0]
    out = {}
    for name, model in models.items():
        t0 = time.monotonic()
        translated = run_translation(model, inputs)
        out[name] = {
            "clf_accuracy": round(classifier_accuracy(clf, translated, test_y), 4),
            "fd_clf": round(fd_clf.score(translated).fd, 4),
            "scorer": rounded(scorer.score_models({"a2b": model})),
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(f"    {name}: {_line(out[name])}", flush=True)
    return out


def judge_unpaired(
    models: dict[str, dict[str, nn.Module]],
    scorer: TranslationScorer,
    clf: FeatureClassifier,
    fd_a: QualityScorer,
    fd_b: QualityScorer,
    classes: tuple[int, int],
) -> dict[str, dict]:
    out = {}
    for name, nets in models.items():
        t0 = time.monotonic()
        row: dict = {}
        for direction, (src, dst), fd in (
            ("a2b", classes, fd_b),
            ("b2a", classes[::-1], fd_a),
        ):
            translated = run_translation(nets[direction], scorer.held_out[direction][0])
            pred = predict(clf.eval(), translated)
            row[direction] = {
                "as_target": round((pred == dst).float().mean().item(), 4),
                "as_source": round((pred == src).float().mean().item(), 4),
                "fd_clf": round(fd.score(translated).fd, 4),
            }
        row["scorer"] = rounded(scorer.score_models(nets))
        row["seconds"] = round(time.monotonic() - t0, 1)
        out[name] = row
        print(f"    {name}: {_line(row)}", flush=True)
    return out


def _line(r: dict) -> str:
    if "clf_accuracy" in r:
        s = r["scorer"]
        return (
            f"acc {r['clf_accuracy']:.3f}, FD(clf) {r['fd_clf']:.3f}, scorer FD {s['fd']:.4f}, "
            f"L1 {s['l1']:.3f}, PSNR {s['psnr']:.2f}, SSIM {s['ssim']:.3f}"
        )
    a, b = r["a2b"], r["b2a"]
    return (
        f"A->B as B {a['as_target']:.3f} (still A {a['as_source']:.3f}), FD(clf) "
        f"{a['fd_clf']:.3f}; B->A as A {b['as_target']:.3f}, FD(clf) {b['fd_clf']:.3f}; "
        f"scorer FD {r['scorer']['fd']:.4f} / {r['scorer']['fd_b2a']:.4f}"
    )
