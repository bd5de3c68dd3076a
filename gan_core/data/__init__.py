"""Datasets as in-memory uint8 tensors: built-ins, .npz files and image folders, plus a batcher.

Everything is loaded once, resized once, and kept as uint8 (N, C, H, W); the Batcher turns it
into float batches on the training device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from gan_core.data._base import DatasetError, DatasetInfo, ImageTensorDataset
from gan_core.data.batcher import Batcher
from gan_core.data.files import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    load_image_folder,
    load_npz,
    read_idx,
)
from gan_core.data.shapes import SHAPE_NAMES, make_shapes

__all__ = [
    "BUILTINS",
    "DEBIAN_FASHION_MNIST",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "SHAPES_SIZE",
    "Batcher",
    "DatasetError",
    "DatasetInfo",
    "ImageTensorDataset",
    "builtin_info",
    "dataset_availability",
    "load_dataset",
    "make_shapes",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt: dataset-fashion-mnist
SHAPES_SIZE = 20_000  # images in the built-in 'shapes' dataset

_FASHION = "T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot"
_CIFAR = "airplane automobile bird cat deer dog frog horse ship truck"
BUILTINS: dict[str, DatasetInfo] = {
    "shapes": DatasetInfo("shapes", 1, 5, None, SHAPE_NAMES),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 10, 28, tuple(_FASHION.split("|"))),
    "mnist": DatasetInfo("mnist", 1, 10, 28, tuple(str(d) for d in range(10))),
    "cifar10": DatasetInfo("cifar10", 3, 10, 32, tuple(_CIFAR.split())),
    # Pairs (gan_core.data.pairs.load_pairs): channels are B's (A: edge maps, 1 channel).
    "shapes-edges": DatasetInfo("shapes-edges", 3, None, None, pairing="paired"),
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")  # the 60k train split
# torchvision checksums all of these (test_batch too) before loading the train split.
_CIFAR_FILES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_TORCHVISION_DIR = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_CHUNK = 4096  # images converted at once, to bound temporary float memory


def builtin_info(name: str) -> DatasetInfo | None:
    """Metadata of a built-in dataset (no I/O), or None if `name` is not one."""
    return BUILTINS.get(name)


# A worker trains job after job in one process; regenerating 20k shapes each time cost
# about a second of every job's start.
_cached_shapes = functools.lru_cache(maxsize=4)(make_shapes)


def load_dataset(
    name: str,
    *,
    image_size: int,
    channels: int | None = None,
    data_dirs: Sequence[str | Path] = (),
    allow_download: bool = False,
    max_items: int | None = None,
    seed: int = 0,
) -> ImageTensorDataset:
    """Load a built-in, 'npz:PATH' or 'image-folder:PATH' dataset at image_size x image_size.

    `channels` converts 1->3 or 3->1 when given; `max_items` keeps the first N images; `seed`
    only matters for generated data ('shapes'). The result's info.channels is what was loaded.
    """
    if image_size < 1:
        raise DatasetError(f"image_size must be positive, got {image_size}")
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    if max_items is not None and max_items < 1:
        raise DatasetError(f"max_items must be at least 1, got {max_items}")
    dirs = [Path(d).expanduser() for d in data_dirs]
    labels: torch.Tensor | None
    if name in BUILTINS and BUILTINS[name].pairing:
        raise DatasetError(
            f"dataset {name!r} holds {BUILTINS[name].pairing} images of two domains (A and B): "
            "load it with gan_core.data.pairs.load_pairs"
        )
    if name == "shapes":
        n = SHAPES_SIZE if max_items is None else min(max_items, SHAPES_SIZE)
        images, labels = _cached_shapes(n, image_size, seed, channels or 1)  # colour when asked
        images, labels = images.clone(), labels.clone()  # callers own their copy
        info = BUILTINS[name]
    elif name in BUILTINS:
        images, labels = _load_builtin(name, dirs, allow_download, max_items)
        info = BUILTINS[name]
    elif name.startswith("npz:"):
        images, labels, info = load_npz(_user_path(name, "npz:"))
    elif name.startswith("image-folder:"):
        path = _user_path(name, "image-folder:")
        images, labels, info = load_image_folder(path, image_size, max_items)
    else:
        raise DatasetError(
            f"unknown dataset {name!r}: use one of {sorted(BUILTINS)}, 'npz:PATH' "
            "or 'image-folder:PATH'"
        )
    if max_items is not None:
        images = images[:max_items]
        labels = None if labels is None else labels[:max_items]
    images = _convert(images, image_size, channels)
    labels = None if labels is None else labels.to(torch.int64).contiguous()
    return ImageTensorDataset(images, labels, replace(info, channels=int(images.shape[1])))


def _user_path(name: str, prefix: str) -> Path:
    path = name[len(prefix) :].strip()
    if not path:
        raise DatasetError(f"dataset {name!r}: give a path after {prefix!r}")
    return Path(path).expanduser()


def _convert(images: torch.Tensor, size: int, channels: int | None) -> torch.Tensor:
    """Resize to size x size and/or convert channels, in float chunks rounded back to uint8."""
    _, c, h, w = images.shape
    to_gray = channels == 1 and c == 3
    if (h, w) != (size, size) or to_gray:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R BT.601
        parts = []
        for chunk in images.split(_CHUNK):
            x = chunk.float()
            if to_gray:
                x = (x * luma.to(x.device)).sum(1, keepdim=True)
            if (h, w) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            parts.append(x.round_().clamp_(0, 255).to(torch.uint8))
        images = torch.cat(parts)
    if channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.contiguous()


# --------------------------------------------------------------------------- built-ins


def _candidate_dirs(name: str, data_dirs: Sequence[Path]) -> list[Path]:
    """Directories searched for a built-in, in order."""
    if name == "cifar10":
        return [d / "cifar-10-batches-py" for d in data_dirs]
    sub = _TORCHVISION_DIR[name]
    dirs = [p for d in data_dirs for p in (d / sub / "raw", d / name)]
    return dirs + [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else dirs


def _idx_path(directory: Path, stem: str) -> Path | None:
    """directory/stem, or its gzipped form, if present."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _find_builtin(name: str, data_dirs: Sequence[Path]) -> Path | None:
    """The first directory holding the train split of a built-in, or None."""
    for d in _candidate_dirs(name, data_dirs):
        if name == "cifar10":
            if all((d / f).is_file() for f in _CIFAR_FILES):
                return d
        elif all(_idx_path(d, stem) for stem in _IDX_FILES):
            return d
    return None


def _missing_message(name: str, data_dirs: Sequence[Path]) -> str:
    if name == "cifar10":
        layout = "batches.meta, data_batch_1..5 and test_batch (CIFAR-10 python version)"
    else:
        layout = " and ".join(f"{stem}[.gz]" for stem in _IDX_FILES)
    dirs = _candidate_dirs(name, data_dirs)
    where = "\n".join(f"  {d}/" for d in dirs) or "  (no data dirs configured)"
    msg = f"dataset {name!r} not found. Put {layout} in one of:\n{where}"
    if name == "fashion-mnist":
        msg += "\nor install the Debian package: apt-get install dataset-fashion-mnist"
    return msg + "\nor allow downloads (into the first data dir)."


def dataset_availability(name: str, data_dirs: Sequence[str | Path] = ()) -> tuple[bool, str]:
    """(usable here?, where it was found or where to put it); file existence checks only."""
    dirs = [Path(d).expanduser() for d in data_dirs]
    if name == "shapes" or name in BUILTINS and BUILTINS[name].pairing:
        return True, "generated procedurally"
    if name in BUILTINS:
        found = _find_builtin(name, dirs)
        return (True, str(found)) if found else (False, _missing_message(name, dirs))
    for prefix, exists in (("npz:", Path.is_file), ("image-folder:", Path.is_dir)):
        if name.startswith(prefix):
            path = Path(name[len(prefix) :].strip()).expanduser()
            return (True, str(path)) if exists(path) else (False, f"{path} does not exist")
    return False, f"unknown dataset {name!r}"


def _load_builtin(
    name: str, data_dirs: Sequence[Path], allow_download: bool, max_items: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    found = _find_builtin(name, data_dirs)
    if found is None and not allow_download:
        raise DatasetError(_missing_message(name, data_dirs))
    if found is None or name == "cifar10":
        return _torchvision_builtin(name, found.parent if found else None, data_dirs)
    # Read IDX ourselves: handles torchvision's raw files and Debian's .gz ones alike, no copies.
    image_file, label_file = (_idx_path(found, stem) for stem in _IDX_FILES)
    assert image_file is not None and label_file is not None  # _find_builtin checked both
    images = read_idx(image_file, 3, max_items)
    labels = read_idx(label_file, 1, max_items)
    if len(images) != len(labels) or images.shape[1:] != (28, 28) or labels.max() > 9:
        raise DatasetError(f"{found}: the image and label files do not belong together")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def _torchvision_builtin(
    name: str, root: Path | None, data_dirs: Sequence[Path]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a built-in from root through torchvision, or download it when root is None."""
    import torchvision.datasets as tvd  # lazy: slow to import and rarely needed

    if root is None and not data_dirs:
        raise DatasetError(f"cannot download {name!r}: no data dir configured to download into")
    cls = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        # CIFAR10 reads its batch files with pickle: torchvision's own reader for the official
        # files, which the operator placed (or torchvision downloaded and checksummed).
        ds = cls(str(root or data_dirs[0]), train=True, download=root is None)
    except (OSError, RuntimeError) as e:
        raise DatasetError(f"dataset {name!r}: {e}\n{_missing_message(name, data_dirs)}") from e
    if name == "cifar10":
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.as_tensor(ds.targets)
    return ds.data.unsqueeze(1), ds.targets
