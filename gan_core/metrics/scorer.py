"""Scoring checkpoints: a dataset's extractor and reference, kept in a directory, and the scores
of a checkpoint's EMA and raw generators.

Both ``ganforge train --score`` (a directory in the run) and the service's worker (a directory
in the artifact store, built under a fleet-wide lock) use this. A directory holds
``extractor.safetensors`` and ``reference.safetensors``; the reference is written last, so a
directory with both files is complete. Files made for other data, another extractor kind or
another ``EXTRACTOR_VERSION`` are not reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gan_core.checkpoint import config_from_meta, load_generator, read_meta
from gan_core.data import ImageTensorDataset
from gan_core.metrics.features import EXTRACTOR_VERSION, FeatureClassifier, train_extractor
from gan_core.metrics.files import (
    dataset_fingerprint,
    extractor_digest,
    load_extractor,
    read_extractor_metadata,
    save_extractor,
)
from gan_core.metrics.inception import InceptionFeatures
from gan_core.metrics.scoring import (
    DEFAULT_NUM_SAMPLES,
    GeneratorScore,
    RealReference,
    build_reference,
    load_reference,
    save_reference,
    score_generator,
)

__all__ = ["SCORE_SEED", "CheckpointScorer", "build_scorer", "load_scorer", "scorer_key"]

# Every checkpoint is scored with the same latents, so scores along a run compare.
SCORE_SEED = 0
EXTRACTOR_FILE, REFERENCE_FILE = "extractor.safetensors", "reference.safetensors"
Log = Callable[[str], object]


def _kind(dataset: ImageTensorDataset) -> str:
    return "rotation" if dataset.labels is None else "classifier"


def scorer_key(dataset: ImageTensorDataset) -> str:
    """Names what an extractor is made for: the data's content, its kind and the recipe version."""
    c, h, w = dataset.images.shape[1:]
    fingerprint = dataset_fingerprint(dataset.images, dataset.labels)
    return f"{fingerprint[:32]}-{_kind(dataset)}-v{EXTRACTOR_VERSION}-{c}x{h}x{w}"


def load_scorer(
    directory: Path, dataset: ImageTensorDataset, device: torch.device, log: Log = print
) -> tuple[FeatureClassifier, RealReference] | None:
    """(extractor, reference) from a directory when they were made for this data; else None."""
    extractor_path, reference_path = directory / EXTRACTOR_FILE, directory / REFERENCE_FILE
    if not (extractor_path.is_file() and reference_path.is_file()):
        return None
    fingerprint = dataset_fingerprint(dataset.images, dataset.labels)
    try:
        meta = read_extractor_metadata(extractor_path)
        if meta.get("dataset_fingerprint") != fingerprint or meta.get("kind") != _kind(dataset):
            raise ValueError("made for other data")
        extractor = load_extractor(extractor_path, device)  # refuses other versions
        reference = load_reference(reference_path)
        if reference.extractor_digest != extractor_digest(extractor):
            raise ValueError("the reference belongs to another extractor")
    except ValueError as exc:
        log(f"scorer: not reusing {directory} ({exc})")
        return None
    return extractor, reference


def build_scorer(
    directory: Path, dataset: ImageTensorDataset, device: torch.device, log: Log = print
) -> tuple[FeatureClassifier, RealReference]:
    """Train the dataset's extractor, compute its reference, and save both in ``directory``."""
    fingerprint = dataset_fingerprint(dataset.images, dataset.labels)
    log(
        f"scorer: training a {_kind(dataset)} feature extractor on {len(dataset)} images "
        "(once per dataset) ..."
    )
    t0 = time.monotonic()
    extractor = train_extractor(
        dataset.images, dataset.labels, num_classes=dataset.info.num_classes, device=device
    )
    reference = build_reference(extractor, dataset.images, dataset_fingerprint=fingerprint)
    directory.mkdir(parents=True, exist_ok=True)
    save_extractor(
        extractor, directory / EXTRACTOR_FILE, metadata={"dataset_fingerprint": fingerprint}
    )
    save_reference(reference, directory / REFERENCE_FILE)  # last: the directory is complete
    log(f"scorer: ready in {time.monotonic() - t0:.0f}s, saved in {directory}")
    return extractor, reference


def _plain(score: GeneratorScore) -> dict[str, Any]:
    out = score.as_dict()
    out.pop("num_samples", None)
    out.pop("extractor", None)
    return out


@dataclass
class CheckpointScorer:
    """Scores a checkpoint's generators against a dataset's reference (and Inception's, if given)."""

    extractor: FeatureClassifier
    reference: RealReference
    device: torch.device
    num_samples: int = DEFAULT_NUM_SAMPLES
    inception: InceptionFeatures | None = None
    inception_reference: RealReference | None = None
    inception_samples: int = 1000

    def score(self, ckpt_dir: Path) -> dict[str, Any]:
        """JSON-able scores of the EMA (if any) and raw generators; ``fd`` and ``preferred`` name
        the better one (lower FD in the dataset's feature space)."""
        t0 = time.monotonic()
        has_ema = config_from_meta(read_meta(ckpt_dir, verify=False)).ema_decay is not None
        out: dict[str, Any] = {"num_samples": self.num_samples, "extractor": self.extractor.kind}
        inception: dict[str, Any] = {}
        for name in ("ema", "raw") if has_ema else ("raw",):
            G = load_generator(ckpt_dir, ema=name == "ema", device=self.device)
            out[name] = _plain(
                score_generator(
                    G, self.extractor, self.reference, num_samples=self.num_samples, seed=SCORE_SEED
                )
            )
            if self.inception is not None and self.inception_reference is not None:
                s = score_generator(
                    G,
                    self.inception,
                    self.inception_reference,
                    num_samples=self.inception_samples,
                    seed=SCORE_SEED,
                )
                inception[name] = {"fid": s.fd, "kid_mean": s.kid_mean, "kid_std": s.kid_std}
        if inception:
            out["inception"] = {**inception, "num_samples": self.inception_samples}
        out["preferred"] = min((n for n in ("ema", "raw") if n in out), key=lambda n: out[n]["fd"])
        out["fd"] = out[out["preferred"]]["fd"]
        out["seconds"] = round(time.monotonic() - t0, 3)
        return out


def format_scores(scores: dict[str, Any]) -> str:
    """One line for a terminal: each generator's FD, KID and precision/recall."""
    parts = []
    for name in ("ema", "raw"):
        s = scores.get(name)
        if s is None:
            continue
        text = (
            f"{name} fd {s['fd']:.3f} kid {s['kid_mean']:.4f}+-{s['kid_std']:.4f} "
            f"precision {s['precision']:.3f} recall {s['recall']:.3f}"
        )
        if s.get("classes_covered") is not None:
            text += f" classes {s['classes_covered']}/{s['num_classes']}"
        parts.append(text)
    return " | ".join(parts)
