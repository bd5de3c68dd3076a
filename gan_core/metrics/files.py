"""Extractor and reference files (safetensors, written atomically) and content hashes.

No pickle anywhere: weights are safetensors, constructor arguments str -> str metadata. The
hashes are what a cache keys on: `dataset_fingerprint` (which data) and `extractor_digest`
(which extractor weights a reference was computed with).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from gan_core.metrics.features import (
    EXTRACTOR_VERSION,
    KINDS,
    FeatureClassifier,
    check_images,
)

_FORMAT = "ganforge.feature_extractor"
_RESERVED = frozenset(
    {"format", "kind", "extractor_version", "channels", "num_classes", "feature_dim"}
)


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to a temp file beside path, fsync, rename: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def _header_metadata(data: bytes) -> dict[str, str]:
    """The __metadata__ of safetensors bytes (u64 little-endian header size, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    return {str(k): str(v) for k, v in meta.items()}


def read_safetensors(
    path: str | os.PathLike[str], fmt: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file whose format is fmt; else ValueError."""
    data = Path(path).read_bytes()  # one read: the checked bytes are the loaded ones
    try:
        tensors = st_load(data)  # validates the header and every tensor's extent
        meta = _header_metadata(data)
    except (SafetensorError, ValueError) as exc:
        raise ValueError(f"{path} is not a safetensors file: {exc}") from exc
    if meta.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format={meta.get('format')!r})")
    return tensors, meta


def save_extractor(
    model: FeatureClassifier,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write weights as safetensors, atomically; constructor args, kind and version as metadata.

    ``metadata`` adds str -> str entries (e.g. the dataset fingerprint a cache keys on).
    """
    extra = dict(metadata or {})
    if clash := sorted(_RESERVED & extra.keys()):
        raise ValueError(f"metadata keys {clash} are reserved")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = extra | {
        "format": _FORMAT,
        "kind": model.kind,
        "extractor_version": EXTRACTOR_VERSION,
        "channels": str(model.channels),
        "num_classes": str(model.num_classes),
        "feature_dim": str(model.feature_dim),
    }
    atomic_write(Path(path), st_save(tensors, metadata=meta))


def read_extractor_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An extractor file's metadata (kind, extractor_version, ...) without building the model."""
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a safetensors file: {exc}") from exc
    if meta.get("format") != _FORMAT:
        raise ValueError(
            f"{path} is not a ganforge feature extractor (format={meta.get('format')!r})"
        )
    return dict(meta)


def load_extractor(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> FeatureClassifier:
    """Read an extractor written by save_extractor (never unpickles); returns it in eval mode.

    A file from another EXTRACTOR_VERSION is refused: its scores would not be comparable.
    """
    tensors, meta = read_safetensors(path, _FORMAT)
    if meta.get("extractor_version") != EXTRACTOR_VERSION:
        raise ValueError(
            f"{path} was made by extractor recipe v{meta.get('extractor_version')}, this library "
            f"is v{EXTRACTOR_VERSION}: train a new one"
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown extractor kind {kind!r}")
    try:
        model = FeatureClassifier(
            int(meta["channels"]), int(meta["num_classes"]), int(meta["feature_dim"]), kind=kind
        )
        model.load_state_dict(tensors, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{path}: weights do not fit the metadata: {exc}") from exc
    return model.to(device).eval()


def save_classifier(clf: FeatureClassifier, path: str | os.PathLike[str]) -> None:
    """save_extractor, under its earlier name."""
    save_extractor(clf, path)


def load_classifier(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> FeatureClassifier:
    """load_extractor for a "classifier" extractor; any other kind is refused."""
    model = load_extractor(path, device)
    if model.kind != "classifier":
        raise ValueError(f"{path} holds a {model.kind!r} extractor, not a classifier")
    return model


# --------------------------------------------------------------------------------- hashes


def dataset_fingerprint(images_uint8: Tensor, labels: Tensor | None) -> str:
    """sha256 hex of a dataset's content, for cache keys.

    Covers the image shape (N, C, H, W), every pixel byte in order, and the labels (as int64,
    or their absence). So any changed pixel or label, a reordering, a resize or a channel
    conversion changes it; the dataset's name or file path do not. 0.03-0.1 s for 60k
    28px images on the 2-core dev box.
    """
    check_images(images_uint8)
    h = hashlib.sha256()
    header = {
        "v": 1,
        "dtype": "uint8",
        "shape": list(images_uint8.shape),
        "labels": None if labels is None else [int(labels.numel())],
    }
    h.update(json.dumps(header, sort_keys=True).encode() + b"\0")
    h.update(images_uint8.detach().cpu().contiguous().numpy().data)  # no copy
    if labels is not None:
        # Little-endian int64 whatever the labels' dtype, so the same labels hash the same.
        arr = labels.detach().cpu().reshape(-1).to(torch.int64).numpy().astype("<i8")
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def extractor_digest(model: nn.Module) -> str:
    """sha256 hex of a module's state (names, dtypes, shapes, bytes): which extractor this is."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        # via uint8 so that every dtype (bf16 too) has a numpy view of its bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()
