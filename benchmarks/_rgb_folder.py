"""A folder of colour images as a user would upload one, for the 64 px stability runs.

No colour photo set is available offline here, so this writes Fashion-MNIST garments as
64 px RGB PNGs, each tinted with its own random garment and background colour, one subfolder
per class (the layout an uploaded labelled folder has). Training then reads it through
``image-folder:PATH``, the same decoder and resize path an upload takes, and the procedural
``shapes`` set is no longer the only 64 px RGB data the recipes are judged on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gan_core.data import DEBIAN_FASHION_MNIST, ImageTensorDataset, load_dataset
from gan_core.data.files import read_idx
from gan_core.metrics import QualityScorer, train_classifier

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat")  # the first five Fashion classes
SIZE = 64
CHANNELS = 3
FOLDER_TRAIN = 10_000  # images in the uploaded-folder set
REFERENCE = 2_000  # real images the scorer's reference statistics come from


def rgb_data(dataset: str, seed: int) -> tuple[ImageTensorDataset, ImageTensorDataset]:
    """64 px RGB (train set, reference set): ``shapes`` (procedural; a second seed's images
    as the reference) or ``folder`` (tinted garments written as an uploaded folder of PNGs and
    read through ``image-folder:``; the test split's garments as the reference)."""
    if dataset == "shapes":
        train_set = load_dataset("shapes", image_size=SIZE, channels=CHANNELS, seed=seed)
        reference = load_dataset("shapes", image_size=SIZE, channels=CHANNELS, seed=seed + 1)
        return train_set, reference
    if dataset != "folder":
        raise ValueError(f"dataset: {dataset!r} is neither 'shapes' nor 'folder'")
    with tempfile.TemporaryDirectory(prefix="ganforge-folder-") as tmp:
        train_dir = write_folder(Path(tmp) / "train", FOLDER_TRAIN, seed, "train")
        ref_dir = write_folder(Path(tmp) / "reference", REFERENCE, seed, "test")
        train_set = load_dataset(f"image-folder:{train_dir}", image_size=SIZE, channels=CHANNELS)
        reference = load_dataset(f"image-folder:{ref_dir}", image_size=SIZE, channels=CHANNELS)
    return train_set, reference  # both in memory: the folders can go


def rgb_scorer(train_set: ImageTensorDataset, reference: ImageTensorDataset, seed: int):
    """A classifier trained on the train set, with the reference images' statistics."""
    clf = train_classifier(
        train_set.images,
        train_set.labels,
        num_classes=train_set.info.num_classes,
        epochs=2,
        seed=seed,
    )
    return QualityScorer(clf, reference.images[:REFERENCE])


def write_folder(root: Path, n: int, seed: int, split: str = "train") -> Path:
    """n tinted 64 px garments of the first five classes from the Fashion-MNIST ``split``."""
    stem = "train" if split == "train" else "t10k"
    images = _idx(f"{stem}-images-idx3-ubyte", 3)
    labels = _idx(f"{stem}-labels-idx1-ubyte", 1)
    keep = np.flatnonzero(labels < len(CLASSES))
    pick = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))[:n]]
    gray = torch.from_numpy(images[pick]).float().div(255).unsqueeze(1)  # (n, 1, 28, 28)
    gray = F.interpolate(gray, size=SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    g = torch.Generator().manual_seed(seed + 1)
    garment = torch.rand(n, 3, 1, 1, generator=g)
    background = torch.rand(n, 3, 1, 1, generator=g) * 0.35  # darker than most garments
    rgb = gray * garment + (1 - gray) * background
    pixels = rgb.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(pixels, labels[pick], strict=True)):
        Image.fromarray(img).save(root / CLASSES[int(label)] / f"{i:05d}.png")
    return root


def _idx(stem: str, ndim: int) -> np.ndarray:
    for path in (DEBIAN_FASHION_MNIST / stem, DEBIAN_FASHION_MNIST / f"{stem}.gz"):
        if path.is_file():
            return read_idx(path, ndim)
    raise FileNotFoundError(f"{stem}[.gz] not in {DEBIAN_FASHION_MNIST}")
