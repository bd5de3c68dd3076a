"""benchmarks/translation_quality.py's data: Fashion-MNIST's IDX splits at SIZE px, Sobel edge
maps of them, and the paired (edges -> images) and unpaired (two classes) datasets built from
them."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_core.data import DEBIAN_FASHION_MNIST
from gan_core.data.files import read_idx
from gan_core.data.pairs import Domain, PairDataset

SIZE = 32


def load_split(split: str, data_dir: Path = DEBIAN_FASHION_MNIST) -> tuple[Tensor, Tensor]:
    """A Fashion-MNIST split ('train' or 't10k') as uint8 (N, 1, 32, 32) and labels."""

    def find(stem: str) -> Path:
        for p in (data_dir / stem, data_dir / f"{stem}.gz"):
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"{stem}[.gz] not found in {data_dir} (apt-get install dataset-fashion-mnist)"
        )

    images = torch.from_numpy(read_idx(find(f"{split}-images-idx3-ubyte"), 3)).unsqueeze(1)
    labels = torch.from_numpy(read_idx(find(f"{split}-labels-idx1-ubyte"), 1)).long()
    return resize(images), labels


def resize(images: Tensor, size: int = SIZE) -> Tensor:
    """uint8 images to size x size: bilinear with antialias, rounded (load_dataset's resize)."""
    parts = [
        F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for c in images.split(4096)
    ]
    return torch.cat(parts).contiguous()


def sobel_edges(images: Tensor) -> Tensor:
    """Edge maps of grey uint8 images as make_shapes_edges makes them (white edges on black)."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    out = torch.empty_like(images)
    for i in torch.arange(images.shape[0]).split(1024):
        grad = F.conv2d(F.pad(images[i].float(), (1, 1, 1, 1), mode="replicate"), kernels)
        mag = grad.pow(2).sum(1, keepdim=True).sqrt()
        peak = mag.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
        out[i] = (mag / peak * 255).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:05d}" for i in range(n))


def paired_data(train_x: Tensor, test_x: Tensor) -> PairDataset:
    """Edges -> image pairs of both splits; the test split is the held-out one."""
    images = torch.cat([train_x, test_x])
    names = _names("train", len(train_x)) + _names("test", len(test_x))
    held = _names("test", len(test_x))
    a = Domain(sobel_edges(images), names, held, SIZE)
    b = Domain(images, names, held, SIZE)
    return PairDataset("fashion-mnist-edges", a, b, True)


def unpaired_data(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], a_class: int, b_class: int
) -> PairDataset:
    """Domain A: images of a_class, B: of b_class; the test split's are held out."""

    def domain(cls: int, prefix: str) -> Domain:
        tr, te = train[0][train[1] == cls], test[0][test[1] == cls]
        names = _names(f"{prefix}train", len(tr)) + _names(f"{prefix}test", len(te))
        return Domain(torch.cat([tr, te]), names, _names(f"{prefix}test", len(te)), SIZE)

    return PairDataset("fashion-mnist-classes", domain(a_class, "a"), domain(b_class, "b"), False)
