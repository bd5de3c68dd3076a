"""A translation job's held-out validation examples, read as the worker reads its data
(app.core.datasets.job_data): what translations.png shows beside their translations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from app.core.artifacts.store import ArtifactStore
from app.core.datasets.job_data import upload_path
from app.core.models import Dataset
from gan_core.data import IMAGE_EXTENSIONS, DatasetError
from gan_core.data.files import decode_image, fit_square
from gan_core.data.pairs import (
    AB_FOLDER,
    held_out_builtin,
    pair_layout,
    validation_names,
)
from gan_core.translation.run import SPLIT_SEED

if TYPE_CHECKING:
    from gan_core.translation.config import TranslationConfig


def _as_channels(arr: np.ndarray, channels: int) -> torch.Tensor:
    """An H×W or H×W×3 uint8 array as (channels, H, W): grey repeated, or colour's first channel
    (a domain has one channel only when all its images are grey)."""
    if arr.ndim == 2:
        arr = arr[None] if channels == 1 else np.repeat(arr[None], 3, axis=0)
    else:
        arr = arr.transpose(2, 0, 1)[:1] if channels == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True))


def _images_by_stem(folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return {p.stem: p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}


def _upload_examples(
    root: Path, size: int, pairing: str, direction: str, n: int
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The first n held-out examples of an upload, decoding only those files: (inputs,
    targets or None)."""
    layout = pair_layout(root)
    if layout is None:
        raise DatasetError(f"{root}: no A/ and B/ folders (or trainA/ and trainB/), nor AB/")
    if isinstance(layout, str):  # AB: each image is A beside B; always paired
        files = _images_by_stem(root / AB_FOLDER)
        halves: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        for stem in validation_names(list(files), SPLIT_SEED, str(root / AB_FOLDER))[:n]:
            im = decode_image(files[stem])
            w, h = im.size
            halves[0].append(fit_square(im.crop((0, 0, w // 2, h)), size))
            halves[1].append(fit_square(im.crop((w // 2, 0, w, h)), size))
        return halves if direction == "a2b" else (halves[1], halves[0])
    sources, others = (layout[0], layout[1]) if direction == "a2b" else (layout[1], layout[0])
    src, dst = _images_by_stem(root / sources), _images_by_stem(root / others)
    stems = validation_names(list(src), SPLIT_SEED, str(root / sources))[:n]
    inputs = [fit_square(decode_image(src[s]), size) for s in stems]
    if pairing != "paired":
        return inputs, None
    return inputs, [fit_square(decode_image(dst[s]), size) for s in stems]


def validation_examples(
    store: ArtifactStore,
    config: TranslationConfig,
    upload: Dataset | None,
    direction: str,
    n: int,
    channels: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n held-out examples of a job's dataset in name order, uint8 (k, C, S, S):
    the inputs of ``direction`` and, for pairs, their targets (None for two domains)."""
    c_in, c_out = channels
    if upload is None:  # a built-in of pairs: only its held-out pairs are made
        a, b = held_out_builtin(
            config.dataset, image_size=config.image_size, seed=SPLIT_SEED, limit=n
        )
        return (a, b) if direction == "a2b" else (b, a)
    try:
        arrays, targets = _upload_examples(
            upload_path(store, upload), config.image_size, upload.kind, direction, n
        )
    except OSError as exc:
        raise DatasetError(f"uploaded dataset {upload.id} cannot be read: {exc}") from exc
    stack = [_as_channels(a, c_in) for a in arrays]
    inputs = torch.stack(stack)
    if targets is None:
        return inputs, None
    return inputs, torch.stack([_as_channels(t, c_out) for t in targets])
