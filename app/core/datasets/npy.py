"""An uploaded .npz checked from its headers and streamed through, never loaded into memory.

``np.load`` would allocate what a header declares and decompress every array whole: a 12 MB
upload holding a 1 GiB ``x`` cost the API 1 GiB of memory per concurrent upload. Here only
the 128-byte ``.npy`` headers are parsed, ``x`` is streamed in 1 MiB pieces (so zipfile
checks its CRC) and only the small label array ``y`` is read. The worker loads the arrays
when it trains.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

import numpy as np

from app.core.datasets.archives import UploadLimits, bad_file, over_limit
from app.core.errors import InvalidInput

MEMBERS = ("x.npy", "y.npy")  # nothing else is stored: an unchecked member is never kept
_CHUNK = 1 << 20


@dataclass(frozen=True)
class NpzSummary:
    num_images: int
    side: int
    channels: int
    num_classes: int | None


def _header(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, shown: str
) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of one member, refusing pickles and lies about sizes."""
    fmt = np.lib.format
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise bad_file(
                    f"{shown}: '{key}' uses .npy format {version}; save it with np.savez"
                )
            header_len = f.tell()
    except InvalidInput:
        raise
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise bad_file(f"{shown}: '{key}' is not a readable .npy array ({exc})") from exc
    if dtype.hasobject:
        raise bad_file(
            f"{shown}: '{key}' is an object array (a pickle); only plain numeric "
            "arrays are accepted"
        )
    # numpy allocates what a header declares before reading: a member claiming a terabyte
    # must be refused here, not discovered by the allocator.
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header_len + nbytes != info.file_size:
        raise bad_file(
            f"{shown}: '{key}' declares shape {shape} ({nbytes} bytes) but holds "
            f"{info.file_size - header_len} bytes"
        )
    return tuple(int(d) for d in shape), dtype, header_len


def _stream_through(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> None:
    """Read a member to its end in small pieces: zipfile checks the CRC, memory stays flat."""
    try:
        with zf.open(info) as f:
            while f.read(_CHUNK):
                pass
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, RuntimeError) as exc:
        raise bad_file(f"{shown}: {info.filename} is corrupt ({exc})") from exc


def inspect_npz(zf: zipfile.ZipFile, limits: UploadLimits, shown: str) -> NpzSummary:
    """Check x (uint8 N×H×W or N×H×W×C, C 1 or 3, H == W) and optional y (N labels 0..K-1)."""
    members = {i.filename: i for i in zf.infolist()}
    if "x.npy" not in members:
        raise bad_file(f"{shown}: no array 'x' (members: {sorted(members)})")
    unknown = sorted(set(members) - set(MEMBERS))
    if unknown:
        raise bad_file(
            f"{shown}: unknown member(s) {unknown}; an .npz holds only 'x' and optionally 'y'"
        )
    shape, dtype, _ = _header(zf, members["x.npy"], "x", shown)
    if dtype != np.uint8:
        raise bad_file(f"{shown}: 'x' must be uint8, got {dtype}")
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise bad_file(f"{shown}: 'x' must be N×H×W or N×H×W×C with C 1 or 3, got shape {shape}")
    n, h, w, c = shape
    if h != w or n == 0 or h == 0:
        raise bad_file(f"{shown}: 'x' must hold square images (H == W), got shape {shape}")
    if n * h * w > limits.max_pixels:
        raise over_limit(
            f"{shown}: 'x' holds {n * h * w} pixels, over the limit of "
            f"{limits.max_pixels} per upload"
        )
    num_classes = None
    if "y.npy" in members:
        y_shape, y_dtype, header_len = _header(zf, members["y.npy"], "y", shown)
        if not np.issubdtype(y_dtype, np.integer) or y_shape != (n,):
            raise bad_file(
                f"{shown}: 'y' must be integers of shape ({n},), got {y_dtype} {y_shape}"
            )
        with zf.open(members["y.npy"]) as f:
            f.seek(header_len)
            y = np.frombuffer(f.read(), dtype=y_dtype)
        if y.min() < 0 or y.max() < 1:
            raise bad_file(
                f"{shown}: 'y' must hold labels 0..K-1 with K >= 2, got {y.min()}..{y.max()}"
            )
        num_classes = int(y.max()) + 1
    _stream_through(zf, members["x.npy"], shown)
    return NpzSummary(num_images=n, side=h, channels=c, num_classes=num_classes)
