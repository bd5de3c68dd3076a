"""Readers for user-supplied data: IDX files, .npz archives and folders of images."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gan_core.data._base import DatasetError, DatasetInfo

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

MAX_IMAGE_PIXELS = 4096 * 4096  # image folders refuse larger files (decompression bombs, memory)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
_PIL_FORMATS = ["PNG", "JPEG", "BMP", "WEBP", "GIF"]  # the only decoders that see user files
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_MAX_IDX_BYTES = 2**32  # a corrupt header must not make us allocate terabytes


def read_idx(path: Path, ndim: int, max_items: int | None = None) -> np.ndarray:
    """An IDX array of unsigned bytes (plain or .gz), reading only the first max_items rows.

    Format: magic 00 00 08 <ndim>, ndim big-endian uint32 dims, then the bytes.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:3] != b"\x00\x00\x08" or magic[3] != ndim:
                raise DatasetError(f"{path}: not an IDX file of {ndim}-d unsigned bytes")
            header = f.read(4 * ndim)
            if len(header) != 4 * ndim:
                raise DatasetError(f"{path}: truncated IDX header")
            dims = [int(d) for d in np.frombuffer(header, dtype=">u4")]
            if max_items is not None:
                dims[0] = min(dims[0], max_items)
            size = int(np.prod(dims))
            if size > _MAX_IDX_BYTES:
                raise DatasetError(f"{path}: implausible IDX dimensions {dims}")
            data = f.read(size)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({e})") from e
    if len(data) != size:
        raise DatasetError(f"{path}: truncated IDX file")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()


def load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, DatasetInfo]:
    """x: uint8 N×H×W or N×H×W×C (C 1 or 3, H == W); optional y: integer labels 0..K-1, (N,)."""
    try:
        # allow_pickle=False: object arrays (pickles) are refused with a ValueError.
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DatasetError(f"{path}: a single .npy array; save x (and y) with np.savez")
            if "x" not in npz.files:
                raise DatasetError(f"{path}: no array 'x' (keys: {sorted(npz.files)})")
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: not a readable .npz of plain arrays ({e})") from e
    if x.dtype != np.uint8:
        raise DatasetError(f"{path}: 'x' must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DatasetError(
            f"{path}: 'x' must be N×H×W or N×H×W×C with C 1 or 3, got shape {x.shape}"
        )
    if x.shape[1] != x.shape[2] or x.shape[0] == 0:
        raise DatasetError(f"{path}: 'x' must hold square images (H == W), got shape {x.shape}")
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    num_classes, labels = None, None
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
            raise DatasetError(
                f"{path}: 'y' must be integers of shape ({len(x)},), got {y.dtype} {y.shape}"
            )
        if y.min() < 0 or y.max() < 1:
            raise DatasetError(
                f"{path}: 'y' must hold labels 0..K-1 with K >= 2, got {y.min()}..{y.max()}"
            )
        num_classes, labels = int(y.max()) + 1, torch.from_numpy(y.astype(np.int64))
    return images, labels, DatasetInfo("npz", x.shape[3], num_classes, x.shape[1])


def _images_in(directory: Path) -> list[Path]:
    """Image files directly in `directory` (by extension, any case), sorted; hidden ones skipped."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def load_image_folder(
    root: Path, size: int, max_items: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, DatasetInfo]:
    """Top-level images (unlabeled), or >= 2 class subfolders of images (labelled, sorted)."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist or is not a directory")
    loose = _images_in(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [(d.name, found) for d in subdirs if (found := _images_in(d))]
    files: list[tuple[Path, int]]
    class_names: tuple[str, ...] | None
    if not loose and len(classes) >= 2:
        files = [(f, label) for label, (_, fs) in enumerate(classes) for f in fs]
        class_names = tuple(name for name, _ in classes)
    elif loose:
        files, class_names = [(f, -1) for f in loose], None
    else:
        hint = f" (only one class subfolder, {classes[0][0]!r}; need 2+)" if classes else ""
        raise DatasetError(
            f"image folder {root} has no images{hint}: put {'/'.join(IMAGE_EXTENSIONS)} files "
            "directly in it, or in one subfolder per class"
        )
    files = files[:max_items]
    images = stack_images([_read_image(f, size) for f, _ in files])
    labels = torch.tensor([label for _, label in files]) if class_names else None
    num_classes = len(class_names) if class_names else None
    info = DatasetInfo("image-folder", int(images.shape[1]), num_classes, None, class_names)
    return images, labels, info


def stack_images(arrays: list[np.ndarray]) -> torch.Tensor:
    """Same-sized H×W (grey) or H×W×3 arrays as uint8 (N, C, H, W): RGB if any is in colour."""
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)[:, None]).contiguous()
    rgb = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
    return torch.from_numpy(np.stack(rgb).transpose(0, 3, 1, 2)).contiguous()


def _is_gray(im: PILImage) -> bool:
    """Grey by mode, or a palette image (GIFs are always palette) whose colours are all grey."""
    if im.mode in _GRAY_MODES:
        return True
    if im.mode not in ("P", "PA"):
        return False
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _read_image(path: Path, size: int) -> np.ndarray:
    """One image center-cropped to a square and resized: size×size (gray) or size×size×3 uint8."""
    return fit_square(decode_image(path), size)


def image_header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from an image's header, nothing decoded; None if it is not readable."""
    from PIL import Image

    try:
        with Image.open(path, formats=_PIL_FORMATS) as im:
            return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # decode_image names the unreadable file


def decode_image(path: Path) -> PILImage:
    """One image decoded as Pillow mode L (grey) or RGB, refused past MAX_IMAGE_PIXELS."""
    from PIL import Image  # lazy: only image folders need Pillow

    try:
        with Image.open(path, formats=_PIL_FORMATS) as opened:
            w, h = opened.size
            if w * h > MAX_IMAGE_PIXELS:  # known from the header, before any pixel is decoded
                raise DatasetError(
                    f"{path}: {w}x{h} pixels is over the limit of {MAX_IMAGE_PIXELS} (4096x4096)"
                )
            opened.load()
            return opened.convert("L" if _is_gray(opened) else "RGB")
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # Pillow raises the bomb error itself, at open, for images far over its own global cap.
        raise DatasetError(f"{path}: not a readable image ({e})") from e


def fit_square(im: PILImage, size: int) -> np.ndarray:
    """An L or RGB image center-cropped to a square and resized to size×size, as uint8."""
    from PIL import Image

    w, h = im.size
    if (w, h) != (size, size):
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        im = im.resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(im, dtype=np.uint8)
