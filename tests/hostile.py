"""Hostile uploads, built byte by byte: what the upload checks must refuse cheaply."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def overlapping_zip(n: int, payload: bytes, suffix: str = ".png") -> bytes:
    """n STORED members whose data ranges overlap (after Fifield's "A better zip bomb", 2019).

    Local headers H1..Hn come first, then the payload; member k's data runs from the end of
    Hk to the end of the payload, so it "quotes" every later header. Each entry's sizes and
    CRC are true, its own ratio is 1:1, and the compressed sizes summed over the central
    directory match the total: only the overlap gives it away. Unpacked, it is about
    n * len(payload) bytes from a file of len(payload) plus headers.
    """
    names = [f"img{i:05d}{suffix}".encode() for i in range(n)]
    header_len = [30 + len(name) for name in names]
    offsets = [sum(header_len[:k]) for k in range(n)]
    end = sum(header_len) + len(payload)
    spans = [(offsets[k] + header_len[k], end - offsets[k] - header_len[k]) for k in range(n)]
    # Member k's CRC covers headers k+1.. and the payload: fill them in from the back.
    blob = bytearray(sum(header_len)) + payload
    crcs = [0] * n
    for k in reversed(range(n)):
        start, size = spans[k]
        crcs[k] = zlib.crc32(bytes(blob[start : start + size]))
        local = (
            struct.pack(
                "<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crcs[k], size, size, len(names[k]), 0
            )
            + names[k]
        )
        blob[offsets[k] : offsets[k] + header_len[k]] = local
    central = b""
    for k, name in enumerate(names):
        start, size = spans[k]
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                crcs[k],
                size,
                size,
                len(name),
                0,
                0,
                0,
                0,
                0o100644 << 16,
                offsets[k],
            )
            + name
        )
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(blob), 0)
    return bytes(blob) + central + eocd


def png(side: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), 0).save(buf, format="PNG")
    return buf.getvalue()


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def npz_with_extra_member() -> bytes:
    """A valid x, and beside it a 'z' whose header declares about 3 TB (it holds 10 bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        x = np.zeros((8, 16, 16), np.uint8)
        zf.writestr("x.npy", npy_header(x.shape) + x.tobytes())
        zf.writestr("z.npy", npy_header((3_000_000, 1000, 1000)) + b"\x00" * 10)
    return buf.getvalue()


def write_big_npz(path: Path, side: int, count: int, seed: int = 0) -> int:
    """An npz whose x is count×side×side uint8, written in pieces (never whole in memory).

    Mostly zeros with sparse noise: it deflates about 30:1, under the archive ratio limit.
    Returns the array's size in bytes.
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, (1 << 22) // (side * side))
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("x.npy", "w", force_zip64=True) as f,
    ):
        f.write(npy_header((count, side, side)))
        done = 0
        while done < count:
            n = min(per_chunk, count - done)
            block = np.zeros(n * side * side, np.uint8)
            hits = rng.integers(0, block.size, block.size // 64)
            block[hits] = rng.integers(1, 255, hits.size, dtype=np.uint8)
            f.write(block.tobytes())
            done += n
    return count * side * side
