"""Scoring generators against a real-data reference: FD, KID, precision/recall, class coverage.

The flow a worker caches: `train_extractor` (features.py) once per dataset, `build_reference`
once per (dataset, extractor), both saved as safetensors; then `score_generator` per checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from safetensors.torch import save as st_save
from torch import Tensor

from gan_core.metrics.distances import frechet_distance, kid, mean_cov, precision_recall
from gan_core.metrics.features import (
    EXTRACTOR_VERSION,
    Extractor,
    FeatureClassifier,
    device_of,
    extract_features,
    predict,
    train_classifier,
)
from gan_core.metrics.files import atomic_write, extractor_digest, read_safetensors
from gan_core.nets import Generator
from gan_core.sampling import default_labels, generate, latents

LabelPolicy = Literal["uniform", "balanced"]

# 2,000 samples per generator keeps scoring a checkpoint's EMA and raw generators under 10% of
# the training between two checkpoints at the default cadence (500 steps, batch 64, DCGAN width
# 64). Measured on the 2-core dev box (CPU, 2 torch threads, torch 2.14): one generator took
# 2.3 s at 28px (Fashion-MNIST) and 3.4 s at 32px, most of it generating the images (KID
# ~0.4 s, precision/recall ~0.1 s); training ran at 437 and 211 images/s, i.e. 73 and 152 s
# between checkpoints, so both generators cost 6.3% and 4.4% of it (3,000 would be ~9.5% at
# 28px). The ratio holds on a busier box: both sides slow down alike.
DEFAULT_NUM_SAMPLES = 2000
REFERENCE_STATS_SIZE = 10_000  # real images behind the reference mean and covariance
REFERENCE_FEATURES = 5000  # real feature vectors kept for KID and precision/recall
_REFERENCE_FORMAT = "ganforge.real_reference"


@torch.no_grad()
def feature_stats(clf: Extractor, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of the features, float64; images uint8 or [-1,1] float."""
    if images.shape[0] < 2:
        raise ValueError("need at least 2 images for a covariance")
    return mean_cov(extract_features(clf, images, batch_size))


def _coverage(counts: Tensor, n: int, min_share: float) -> int:
    return int((counts >= min_share * n).sum()) if n else 0


@torch.no_grad()
def class_coverage(
    clf: FeatureClassifier, images: Tensor, *, min_share: float = 0.02
) -> tuple[int, Tensor]:
    """Classes predicted (argmax) for at least min_share of the images, and the (K,) histogram."""
    counts = torch.bincount(predict(clf, images), minlength=clf.num_classes)
    return _coverage(counts, images.shape[0], min_share), counts


# --------------------------------------------------------------------------------- reference


@dataclass(frozen=True, eq=False)  # eq would compare tensors elementwise
class RealReference:
    """What scoring needs from the real data, computed once per (dataset, extractor)."""

    mu: Tensor  # (D,) float64 mean of real features
    sigma: Tensor  # (D, D) float64 covariance
    features: Tensor  # (M, D) float32: a seeded random subset of real features, for KID and P/R
    kind: str  # the extractor's kind: classifier | rotation | inception
    extractor_digest: str  # extractor_digest() of the extractor it was computed with
    num_classes: int | None  # the classifier's classes (coverage), None for other kinds
    image_shape: tuple[int, int, int]  # (C, H, W) of the real images
    num_images: int  # real images behind mu and sigma
    seed: int
    dataset_fingerprint: str | None = None


def _seeded_order(n: int, seed: int) -> Tensor:
    # A random subset, not the first rows: datasets are often stored sorted by class.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def build_reference(
    extractor: Extractor,
    images: Tensor,
    *,
    stats_size: int = REFERENCE_STATS_SIZE,
    features_size: int = REFERENCE_FEATURES,
    seed: int = 0,
    batch_size: int = 500,
    dataset_fingerprint: str | None = None,
) -> RealReference:
    """Reference of real (N, C, H, W) images: stats over a seeded subset, features of its head."""
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"need (N >= 2, C, H, W) real images, got {tuple(images.shape)}")
    order = _seeded_order(images.shape[0], seed)[: max(stats_size, features_size)]
    feats = extract_features(extractor, images[order], batch_size)  # one pass serves both
    mu, sigma = mean_cov(feats[:stats_size])
    return RealReference(
        mu=mu,
        sigma=sigma,
        features=feats[:features_size].contiguous(),
        kind=extractor.kind,
        extractor_digest=extractor_digest(extractor),
        num_classes=extractor.num_classes if extractor.kind == "classifier" else None,
        image_shape=(int(images.shape[1]), int(images.shape[2]), int(images.shape[3])),
        num_images=min(stats_size, images.shape[0]),
        seed=seed,
        dataset_fingerprint=dataset_fingerprint,
    )


def save_reference(ref: RealReference, path: str | os.PathLike[str]) -> None:
    """Write a reference as safetensors (atomically); scalars go in the str -> str metadata."""
    meta = {
        "format": _REFERENCE_FORMAT,
        "extractor_version": EXTRACTOR_VERSION,
        "kind": ref.kind,
        "extractor_digest": ref.extractor_digest,
        "num_classes": "" if ref.num_classes is None else str(ref.num_classes),
        "image_shape": ",".join(map(str, ref.image_shape)),
        "num_images": str(ref.num_images),
        "seed": str(ref.seed),
        "dataset_fingerprint": ref.dataset_fingerprint or "",
    }
    tensors = {"mu": ref.mu, "sigma": ref.sigma, "features": ref.features}
    atomic_write(
        Path(path), st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    )


def load_reference(path: str | os.PathLike[str]) -> RealReference:
    """Read a reference written by save_reference (never unpickles); ValueError if it is not one."""
    tensors, meta = read_safetensors(path, _REFERENCE_FORMAT)
    try:
        c, h, w = (int(v) for v in meta["image_shape"].split(","))
        ref = RealReference(
            mu=tensors["mu"],
            sigma=tensors["sigma"],
            features=tensors["features"],
            kind=meta["kind"],
            extractor_digest=meta["extractor_digest"],
            num_classes=int(meta["num_classes"]) if meta["num_classes"] else None,
            image_shape=(c, h, w),
            num_images=int(meta["num_images"]),
            seed=int(meta["seed"]),
            dataset_fingerprint=meta["dataset_fingerprint"] or None,
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: malformed reference: {exc}") from exc
    d = ref.mu.shape[0]
    if ref.sigma.shape != (d, d) or ref.features.ndim != 2 or ref.features.shape[1] != d:
        raise ValueError(f"{path}: reference tensors have inconsistent shapes")
    return ref


# --------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class GeneratorScore:
    """One generator's scores. FD and KID: lower is better; precision and recall: higher."""

    fd: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    classes_covered: int | None  # classifier extractors only
    num_classes: int | None
    num_samples: int
    extractor: str  # the extractor's kind

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON."""
        return asdict(self)


def _derived_seed(seed: int, purpose: str) -> int:
    """An independent seed per use (labels, KID subsets) from the caller's one seed."""
    return int.from_bytes(hashlib.sha256(f"{purpose}:{seed}".encode()).digest()[:8], "little") >> 1


def _labels(generator: Generator, n: int, policy: LabelPolicy | Tensor, seed: int) -> Tensor | None:
    num_classes = getattr(generator, "num_classes", None)
    if num_classes is None:
        return None
    if isinstance(policy, Tensor):
        return default_labels(generator, n, policy)
    g = torch.Generator().manual_seed(_derived_seed(seed, "labels"))
    if policy == "uniform":  # i.i.d. uniform classes
        return torch.randint(int(num_classes), (n,), generator=g)
    if policy == "balanced":  # each class n/K times (+-1), in seeded random order
        return (torch.arange(n) % int(num_classes))[torch.randperm(n, generator=g)]
    raise ValueError(f"labels must be 'uniform', 'balanced' or a tensor, got {policy!r}")


@torch.no_grad()
def score_generator(
    generator: Generator,
    extractor: Extractor,
    reference: RealReference,
    *,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    batch_size: int = 250,
    labels: LabelPolicy | Tensor = "uniform",
    k: int = 3,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    min_share: float = 0.02,
) -> GeneratorScore:
    """Score num_samples seeded images of G against the reference; same inputs, same numbers.

    Images are generated and embedded batch by batch, so memory holds only (N, D) features.
    A conditional G gets seeded labels: "uniform" (i.i.d.), "balanced", or given (N,) labels.
    FD depends on N (its bias shrinks as 1/N): compare scores made with the same num_samples.
    Precision/recall use min(N, M) vectors of each side, M = the reference's feature count.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    if extractor_digest(extractor) != reference.extractor_digest:
        raise ValueError("the reference was computed with another extractor")
    latent_dim = getattr(generator, "latent_dim", None)
    if not isinstance(latent_dim, int):
        raise TypeError("generator needs an int .latent_dim (gan_core.nets.Generator has one)")
    # The latents of sample(G, num_samples, seed): the scored images can be looked at.
    z = latents(num_samples, latent_dim, seed)
    y = _labels(generator, num_samples, labels, seed)
    with_classes = extractor.kind == "classifier" and reference.num_classes is not None
    device = device_of(extractor)
    feats, preds = [], []
    modes = generator.training, extractor.training
    generator.eval()  # train-mode BatchNorm would use batch stats and change its running stats
    extractor.eval()
    try:
        for i in range(0, num_samples, batch_size):
            images = generate(
                generator, z[i : i + batch_size], None if y is None else y[i : i + batch_size]
            )
            if tuple(images.shape[1:]) != reference.image_shape:
                raise ValueError(
                    f"generator makes {tuple(images.shape[1:])} images, the reference is of "
                    f"{reference.image_shape}"
                )
            f = extractor.features(images.to(device))
            if with_classes:
                preds.append(cast(FeatureClassifier, extractor).head(f).argmax(1).cpu())
            feats.append(f.float().cpu())
    finally:
        generator.train(modes[0])
        extractor.train(modes[1])
    fake = torch.cat(feats)
    mu, sigma = mean_cov(fake)
    kid_mean, kid_std = kid(
        reference.features,
        fake,
        subset_size=kid_subset_size,
        subsets=kid_subsets,
        seed=_derived_seed(seed, "kid"),
    )
    n_pr = min(num_samples, reference.features.shape[0])
    precision, recall = precision_recall(reference.features[:n_pr], fake[:n_pr], k=k)
    covered = None
    if with_classes:
        counts = torch.bincount(torch.cat(preds), minlength=int(reference.num_classes or 0))
        covered = _coverage(counts, num_samples, min_share)
    return GeneratorScore(
        fd=frechet_distance(reference.mu, reference.sigma, mu, sigma),
        kid_mean=kid_mean,
        kid_std=kid_std,
        precision=precision,
        recall=recall,
        classes_covered=covered,
        num_classes=reference.num_classes if with_classes else None,
        num_samples=num_samples,
        extractor=extractor.kind,
    )


# --------------------------------------------------------------------------------- legacy


@dataclass(frozen=True)
class QualityScore:
    """One set of generated images' score: FD (lower is better) and classes covered."""

    fd: float
    classes_covered: int
    num_classes: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON."""
        return asdict(self)


class QualityScorer:
    """A trained classifier plus the real data's feature stats; scores sets of generated images."""

    def __init__(self, clf: FeatureClassifier, real_images: Tensor):
        self.clf = clf.eval()
        self.real_mu, self.real_sigma = feature_stats(clf, real_images)

    def score(self, fake_images: Tensor) -> QualityScore:
        """Score (N, C, H, W) generated images in [-1, 1] against the real stats."""
        mu, sigma = feature_stats(self.clf, fake_images)
        covered, _ = class_coverage(self.clf, fake_images)
        return QualityScore(
            fd=frechet_distance(self.real_mu, self.real_sigma, mu, sigma),
            classes_covered=covered,
            num_classes=self.clf.num_classes,
        )

    @classmethod
    def fit(
        cls,
        images_uint8: Tensor,
        labels: Tensor,
        *,
        num_classes: int,
        epochs: int = 2,
        seed: int = 0,
        ref_size: int = 10_000,
    ) -> QualityScorer:
        """Train a classifier on the data; reference stats from up to ref_size of its images."""
        clf = train_classifier(
            images_uint8, labels, num_classes=num_classes, epochs=epochs, seed=seed
        )
        idx = _seeded_order(images_uint8.shape[0], seed)[:ref_size]
        return cls(clf, images_uint8[idx])
