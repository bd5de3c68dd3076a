"""Image-quality scoring: Fréchet distance in a small classifier's features, and class coverage.

Like FID, but the feature extractor is a small CNN trained on the dataset itself, so nothing is
downloaded and the score works for any image size >= 16 and 1 or 3 channels. Numbers are only
comparable between runs scored with the same classifier (save it with `save_classifier`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "FeatureClassifier",
    "QualityScore",
    "QualityScorer",
    "class_coverage",
    "classifier_accuracy",
    "feature_stats",
    "frechet_distance",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]

_FORMAT = "ganforge.feature_classifier.v1"
_GROUPS = 8  # GroupNorm groups; divides 32, 64 and 128


def _to_unit_range(x: Tensor) -> Tensor:
    """uint8 [0,255] -> float [-1,1]; float input is taken to be in [-1,1] already."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 stride-2 conv, GroupNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        # GroupNorm rather than BatchNorm: features of one image never depend on the batch or on
        # running statistics, so train/eval mode and batch composition cannot shift the FD.
        nn.GroupNorm(_GROUPS, c_out),
        nn.ReLU(inplace=True),
    )


class FeatureClassifier(nn.Module):
    """Small CNN: conv blocks -> global pooling -> feature vector (feature_dim) -> linear logits."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        if channels < 1 or num_classes < 2 or feature_dim < 1:
            raise ValueError(
                f"need channels >= 1, num_classes >= 2, feature_dim >= 1; "
                f"got {channels}, {num_classes}, {feature_dim}"
            )
        self.channels, self.num_classes, self.feature_dim = channels, num_classes, feature_dim
        self.body = nn.Sequential(
            _conv_block(channels, 32),
            _conv_block(32, 64),
            _conv_block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(128, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(N, C, H, W) floats in [-1, 1], sides >= 16 -> (N, feature_dim)."""
        if x.ndim != 4 or x.shape[1] != self.channels or min(x.shape[-2:]) < 16:
            raise ValueError(
                f"expected (N, {self.channels}, H>=16, W>=16) images, got {tuple(x.shape)}"
            )
        return self.embed(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.features(x))


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    epochs: int = 2,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FeatureClassifier:
    """Train a FeatureClassifier on uint8 (N, C, H, W) images; deterministic per seed on CPU."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
    labels = labels.long().reshape(-1)
    if labels.numel() != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.numel()} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    device = torch.device(device)
    # Seed init in a forked RNG so that training a scorer does not disturb the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = FeatureClassifier(images.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    clf.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            # Convert per batch: the whole set as float would be 4x the uint8 memory.
            x = _to_unit_range(images[idx].to(device))
            loss = F.cross_entropy(clf(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.eval()


@torch.no_grad()
def _predict(clf: FeatureClassifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """Argmax class of each image (uint8 or [-1,1] float), on the CPU."""
    device = _device_of(clf)
    preds = [
        clf(_to_unit_range(images[i : i + batch_size].to(device))).argmax(1).cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def classifier_accuracy(clf: FeatureClassifier, images_uint8: Tensor, labels: Tensor) -> float:
    """Fraction of images whose argmax class equals the label."""
    was_training = clf.training
    clf.eval()
    try:
        preds = _predict(clf, images_uint8)
    finally:
        clf.train(was_training)
    return (preds == labels.long().reshape(-1).cpu()).float().mean().item()


def save_classifier(clf: FeatureClassifier, path: str | os.PathLike) -> None:
    """Write weights as safetensors; constructor args go in the (str -> str) metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    metadata = {
        "format": _FORMAT,
        "channels": str(clf.channels),
        "num_classes": str(clf.num_classes),
        "feature_dim": str(clf.feature_dim),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def load_classifier(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> FeatureClassifier:
    """Read a classifier written by save_classifier (never unpickles); returns it in eval mode."""
    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != _FORMAT:
        raise ValueError(
            f"{path} is not a ganforge feature classifier (format={meta.get('format')})"
        )
    clf = FeatureClassifier(
        int(meta["channels"]), int(meta["num_classes"]), int(meta["feature_dim"])
    )
    clf.load_state_dict(load_file(path), strict=True)
    return clf.to(device).eval()


@torch.no_grad()
def feature_stats(
    clf: FeatureClassifier, images: Tensor, batch_size: int = 500
) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of the features, float64; images uint8 or [-1,1] float."""
    if images.shape[0] < 2:
        raise ValueError("need at least 2 images for a covariance")
    device = _device_of(clf)
    feats = torch.cat(
        [
            clf.features(_to_unit_range(images[i : i + batch_size].to(device))).double().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )
    return feats.mean(0), torch.cov(feats.T)


def _sym(m: Tensor) -> Tensor:
    return (m + m.T) / 2


def _sqrtm_psd(m: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix via eigh; tiny negative eigenvalues clamp to 0."""
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians, in float64."""
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).cpu() for m in (mu1, mu2))
    s1, s2 = (_sym(torch.as_tensor(s, dtype=torch.float64).cpu()) for s in (sigma1, sigma2))
    # (S1 S2)^{1/2} has the same eigenvalues as the symmetric PSD S1^{1/2} S2 S1^{1/2}, so its trace
    # needs only eigh/eigvalsh: no scipy, no complex parts from a non-symmetric sqrtm.
    r1 = _sqrtm_psd(s1)
    tr_covmean = torch.linalg.eigvalsh(_sym(r1 @ s2 @ r1)).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    fd = diff.dot(diff) + s1.trace() + s2.trace() - 2 * tr_covmean
    return max(fd.item(), 0.0)


@torch.no_grad()
def class_coverage(
    clf: FeatureClassifier, images: Tensor, *, min_share: float = 0.02
) -> tuple[int, Tensor]:
    """Classes predicted (argmax) for at least min_share of the images, and the (K,) histogram."""
    counts = torch.bincount(_predict(clf, images), minlength=clf.num_classes)
    covered = int((counts >= min_share * images.shape[0]).sum()) if images.shape[0] else 0
    return covered, counts


@dataclass(frozen=True)
class QualityScore:
    """One set of generated images' score: FD (lower is better) and classes covered."""

    fd: float
    classes_covered: int
    num_classes: int

    def as_dict(self) -> dict:
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
        n = images_uint8.shape[0]
        # A seeded random subset, not the first ref_size: datasets are often stored sorted by class.
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:ref_size]
        return cls(clf, images_uint8[idx])
