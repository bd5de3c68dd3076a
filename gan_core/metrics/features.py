"""Feature extractors for scoring, trained on the dataset itself: nothing is downloaded.

One small CNN (`FeatureClassifier`) and one file format serve two recipes:

- ``"classifier"``: trained to predict the dataset's labels (labelled datasets).
- ``"rotation"``: trained to predict by how much (0/90/180/270 degrees) an image was rotated
  (RotNet, Gidaris et al. 2018), for **unlabelled** datasets. Why rotation: the labels are
  free, and telling which way is up needs the shapes and parts of the objects, so the features
  describe the content the way a classifier's do; a fixed-seed random CNN (the other option
  that needs no labels and no download) has features no task has shaped. Measured on
  Fashion-MNIST (the 60k train split, 2 epochs each; rotation accuracy on the test split
  97%): FD of 2,000 images against the 10k test split, as a multiple of the floor (2,000
  other real images), in each extractor's own features:

  ============================  ==========  ==========  ===========
  images scored                 classifier  rotation    random CNN
  ============================  ==========  ==========  ===========
  real (the floor, its FD)      1 (0.081)   1 (0.0069)  1 (0.0011)
  only 3 of the 10 classes      856         119         35
  blurred (3x3 box)             30          82          25
  Gaussian noise, sigma 0.2     25          21          5.8
  uniform noise                 1233        922         453
  ============================  ==========  ==========  ===========

  So rotation features react 3-4x more strongly than random ones to dropped modes, blur and
  noise; a classifier sees dropped classes far better still, which is why labels are used
  when there are any. (For rotation, the pooled conv layer before the embedding did worse
  on all but the noise row: 89 / 34 / 26 / 490.) Its weak spot: images that look the same
  turned by 90 degrees (discs, squares, many textures) teach it nothing. On 'shapes', where
  that is 4 classes of 5, it learned only the triangles (rotation accuracy 100% on them, 25%
  on the rest), yet its FD still told one-class sets, flips and blur from real shapes far
  more clearly than a random CNN's did.

Numbers are only comparable between runs scored with the same extractor file: save it with
`save_extractor`; its metadata carries the kind and `EXTRACTOR_VERSION`, so a cache keyed on
them is invalidated when the recipe changes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from gan_core.metrics.inception import InceptionFeatures

# Bump when anything that changes an extractor's features changes: the network, the training
# recipe (epochs, rate, batch, augmentation), the input scaling or the feature layer.
EXTRACTOR_VERSION = "2"
ExtractorKind = Literal["classifier", "rotation"]
# What scoring accepts: both have .features(x), .kind, .num_classes and .feature_dim.
Extractor: TypeAlias = "FeatureClassifier | InceptionFeatures"
KINDS: tuple[ExtractorKind, ...] = ("classifier", "rotation")
# A one-off per dataset. Fashion-MNIST (60k, 28px) on the 2-core dev box (CPU, 2 threads):
# classifier 13.5 s (27 s while the box was busy), rotation 10.2 s; its reference 0.4 s.
DEFAULT_EPOCHS: dict[ExtractorKind, int] = {"classifier": 2, "rotation": 2}
# At least this many optimizer steps: 2 epochs of a 1,000-image upload would be 16 steps,
# which learn nothing (measured: after 72 steps on 3,000 shapes, rotation accuracy on the
# triangles was still at chance). Fashion-MNIST's 2 epochs at batch 128 are 938 steps.
MIN_TRAIN_STEPS = 900
BATCH_SIZE = 128

_GROUPS = 8  # GroupNorm groups; divides 32, 64 and 128


def to_unit_range(x: Tensor) -> Tensor:
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
    """Small CNN: conv blocks -> global pooling -> feature vector (feature_dim) -> linear logits.

    ``kind`` says what the logits predict: the dataset's classes ("classifier") or one of four
    rotations ("rotation", num_classes == 4).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        feature_dim: int = 128,
        kind: ExtractorKind = "classifier",
    ) -> None:
        super().__init__()
        if channels < 1 or num_classes < 2 or feature_dim < 1:
            raise ValueError(
                f"need channels >= 1, num_classes >= 2, feature_dim >= 1; "
                f"got {channels}, {num_classes}, {feature_dim}"
            )
        if kind not in KINDS or (kind == "rotation" and num_classes != 4):
            raise ValueError(f"kind must be one of {KINDS} (rotation: 4 classes), got {kind!r}")
        self.channels, self.num_classes, self.feature_dim = channels, num_classes, feature_dim
        self.kind: ExtractorKind = kind
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
        return cast(Tensor, self.embed(self.body(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes)."""
        return cast(Tensor, self.head(self.features(x)))


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without any)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def check_images(images: Tensor) -> None:
    """ValueError unless images are uint8 (N, C, H, W)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")


def _fit(
    model: FeatureClassifier,
    images: Tensor,
    targets: Tensor | None,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> FeatureClassifier:
    """Adam on cross-entropy; targets None = predict a seeded random rotation of each image."""
    device = device_of(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            # Convert per batch: the whole set as float would be 4x the uint8 memory.
            x = to_unit_range(images[idx].to(device))
            if targets is None:
                # One random rotation per image rather than all four (RotNet's choice): the same
                # cost per epoch as the classifier, and the rotations drawn vary by epoch.
                y = torch.randint(4, (idx.numel(),), generator=gen).to(device)
                x = torch.cat([torch.rot90(x[y == r], r, dims=(2, 3)) for r in range(4)])
                y = torch.cat([y[y == r] for r in range(4)])
            else:
                y = targets[idx]
            loss = F.cross_entropy(model(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def default_epochs(kind: ExtractorKind, num_images: int, batch_size: int = BATCH_SIZE) -> int:
    """DEFAULT_EPOCHS[kind], raised so that training takes at least MIN_TRAIN_STEPS steps."""
    steps_per_epoch = max(math.ceil(num_images / batch_size), 1)
    return max(DEFAULT_EPOCHS[kind], math.ceil(MIN_TRAIN_STEPS / steps_per_epoch))


def _new_model(
    channels: int, num_classes: int, kind: ExtractorKind, seed: int, device: str | torch.device
) -> FeatureClassifier:
    # Seed init in a forked RNG so that training a scorer does not disturb the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FeatureClassifier(channels, num_classes, kind=kind).to(torch.device(device))


def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    epochs: int | None = None,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FeatureClassifier:
    """Train a "classifier" extractor on uint8 (N, C, H, W) images; deterministic per seed on CPU.

    epochs None: `default_epochs`.
    """
    check_images(images)
    labels = labels.long().reshape(-1)
    if labels.numel() != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.numel()} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    model = _new_model(images.shape[1], num_classes, "classifier", seed, device)
    if epochs is None:
        epochs = default_epochs("classifier", images.shape[0], batch_size)
    return _fit(model, images, labels, epochs=epochs, batch_size=batch_size, seed=seed)


def train_rotation_extractor(
    images: Tensor,
    *,
    epochs: int | None = None,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FeatureClassifier:
    """Train a "rotation" extractor (no labels needed) on square uint8 images; seeded on CPU.

    epochs None: `default_epochs`.
    """
    check_images(images)
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[2:])}")
    model = _new_model(images.shape[1], 4, "rotation", seed, device)
    if epochs is None:
        epochs = default_epochs("rotation", images.shape[0], batch_size)
    return _fit(model, images, None, epochs=epochs, batch_size=batch_size, seed=seed)


def train_extractor(
    images: Tensor,
    labels: Tensor | None = None,
    *,
    num_classes: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FeatureClassifier:
    """The extractor for a dataset: a classifier when it has labels, else rotation prediction."""
    if labels is None:
        return train_rotation_extractor(images, epochs=epochs, seed=seed, device=device)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    return train_classifier(
        images, labels, num_classes=num_classes, epochs=epochs, seed=seed, device=device
    )


@torch.no_grad()
def extract_features(model: Extractor, images: Tensor, batch_size: int = 500) -> Tensor:
    """(N, D) float32 CPU features of uint8 or [-1,1] float images, batch by batch."""
    device = device_of(model)
    chunks = [
        model.features(to_unit_range(images[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


@torch.no_grad()
def predict(model: FeatureClassifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """Argmax class of each image (uint8 or [-1,1] float), on the CPU."""
    device = device_of(model)
    preds = [
        model(to_unit_range(images[i : i + batch_size].to(device))).argmax(1).cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def classifier_accuracy(clf: FeatureClassifier, images_uint8: Tensor, labels: Tensor) -> float:
    """Fraction of images whose argmax class equals the label (rotation: labels are 0..3)."""
    was_training = clf.training
    clf.eval()
    try:
        preds = predict(clf, images_uint8)
    finally:
        clf.train(was_training)
    return (preds == labels.long().reshape(-1).cpu()).float().mean().item()
