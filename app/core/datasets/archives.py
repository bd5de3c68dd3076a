"""Zip archives checked before and while they are unpacked: names, links, counts, sizes, ratios.

Everything here refuses with a 422 (``bad_file``) naming the entry and the rule it broke;
nothing is unpacked before the central directory has been checked whole.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import InvalidInput, TooLarge
from app.core.settings import Settings

RATIO_MIN_BYTES = 1 << 20  # expansion ratios are judged on members (and archives) this large
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # the uploaded file
    max_entries: int  # entries in an archive
    max_unpacked_bytes: int  # the archive's total uncompressed size
    max_ratio: float  # uncompressed / compressed, per large member and for the whole archive
    max_pixels: int  # decoded pixels, summed over an upload's images

    @classmethod
    def of(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_entries=settings.max_upload_entries,
            max_unpacked_bytes=settings.max_upload_unpacked_bytes,
            max_ratio=settings.max_upload_ratio,
            max_pixels=settings.max_upload_pixels,
        )


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"the upload is larger than the limit of {limit} bytes", field="file")


def over_limit(detail: str) -> TooLarge:
    return TooLarge(detail, field="file")


def bad_file(detail: str) -> InvalidInput:
    return InvalidInput(detail, field="file")


def entry_parts(name: str) -> tuple[str, ...]:
    """The path components of a zip entry name; 422 for anything that could escape or mislead."""
    if "\\" in name:
        raise bad_file(f"archive entry {name!r}: backslashes are not allowed in entry names")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise bad_file(f"archive entry {name!r}: control characters in the name")
    if name.startswith("/") or _DRIVE.match(name):
        raise bad_file(f"archive entry {name!r}: absolute paths are not allowed")
    raw = name.split("/")
    if ".." in raw:
        raise bad_file(f"archive entry {name!r}: '..' is not allowed in entry names")
    parts = tuple(p for p in raw if p not in ("", "."))
    if not parts:
        raise bad_file(f"archive entry {name!r}: empty name")
    if len(name.encode()) > 1024 or any(len(p.encode()) > 255 for p in parts):
        raise bad_file(f"archive entry {name[:80]!r}...: name too long")
    return parts


def count_central_directory(path: Path, limit: int) -> None:
    """Refuse an archive with more than `limit` entries before zipfile builds one object each.

    Walks the central directory the way zipfile does (by its byte size, not the count the end
    record claims), reading only the fixed headers; memory stays constant.
    """
    zf: Any = zipfile  # its private helpers are not in the type stubs
    try:
        end_rec = zf._EndRecData  # private, but stable since Python 2
        size_cd_i, offset_i, loc_i, sig_i = (
            zf._ECD_SIZE,
            zf._ECD_OFFSET,
            zf._ECD_LOCATION,
            zf._ECD_SIGNATURE,
        )
        fmt, size_hdr = zf.structCentralDir, zf.sizeCentralDir
    except AttributeError:  # a future Python: zipfile's own parse, then the count check
        return
    with open(path, "rb") as f:
        rec = end_rec(f)
        if not rec:
            raise bad_file("not a readable zip archive (no end of central directory record)")
        size_cd, offset_cd = rec[size_cd_i], rec[offset_i]
        concat = rec[loc_i] - size_cd - offset_cd
        if rec[sig_i] == zf.stringEndArchive64:
            concat -= zf.sizeEndCentDir64 + zf.sizeEndCentDir64Locator
        f.seek(offset_cd + concat)
        seen = count = 0
        while seen < size_cd:
            header = f.read(size_hdr)
            if len(header) != size_hdr or header[:4] != zf.stringCentralDir:
                return  # malformed: let zipfile report it
            fields = struct.unpack(fmt, header)
            extra = (
                fields[zf._CD_FILENAME_LENGTH]
                + fields[zf._CD_EXTRA_FIELD_LENGTH]
                + fields[zf._CD_COMMENT_LENGTH]
            )
            f.seek(extra, os.SEEK_CUR)
            seen += size_hdr + extra
            count += 1
            if count > limit:
                raise bad_file(f"the archive has more than {limit} entries (the limit)")


def open_zip(path: Path, limits: UploadLimits) -> zipfile.ZipFile:
    count_central_directory(path, limits.max_entries)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise bad_file(f"not a readable zip archive ({exc})") from exc


Entries = list[tuple[zipfile.ZipInfo, tuple[str, ...]]]  # each member with its path components


def check_archive(zf: zipfile.ZipFile, limits: UploadLimits) -> Entries:
    """Every entry checked from the central directory, before a byte is unpacked."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise bad_file(f"the archive has {len(infos)} entries; the limit is {limits.max_entries}")
    out, names = [], set()
    total = total_compressed = 0
    for info in infos:
        name = info.filename
        parts = entry_parts(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise bad_file(f"archive entry {name!r} is a symbolic link; links are not allowed")
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise bad_file(f"archive entry {name!r} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise bad_file(f"archive entry {name!r} is encrypted; upload an unencrypted zip")
        if parts in names:
            raise bad_file(f"archive entry {name!r} appears more than once")
        names.add(parts)
        if info.is_dir():
            continue
        total += info.file_size
        total_compressed += info.compress_size
        if total > limits.max_unpacked_bytes:
            raise bad_file(
                f"the archive unpacks to more than the limit of {limits.max_unpacked_bytes} bytes"
            )
        big = info.file_size >= RATIO_MIN_BYTES
        if big and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise bad_file(
                f"archive entry {name!r} expands {ratio:.0f}:1 ({info.compress_size} -> "
                f"{info.file_size} bytes), over the limit of {limits.max_ratio:g}:1; "
                "refusing a possible zip bomb"
            )
        out.append((info, parts))
    check_no_overlap(zf)  # else compressed bytes counted twice make the ratios above meaningless
    if total >= RATIO_MIN_BYTES and total > limits.max_ratio * max(total_compressed, 1):
        ratio = total / max(total_compressed, 1)
        raise bad_file(
            f"the archive expands {ratio:.0f}:1 ({total_compressed} -> {total} bytes), over the "
            f"limit of {limits.max_ratio:g}:1; refusing a possible zip bomb"
        )
    return out


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length (30 bytes)
_LOCAL_SIGNATURE = b"PK\x03\x04"


def check_no_overlap(zf: zipfile.ZipFile) -> None:
    """Every member's bytes lie apart from every other member's and before the central directory.

    A zip bomb of overlapping entries (Fifield 2019) points many central directory entries at
    the same compressed bytes: each passes the ratio checks, together they unpack to
    gigabytes. Reads one 30-byte local header per member.
    """
    fp = zf.fp
    if fp is None:
        return
    spans = []
    for info in zf.infolist():
        fp.seek(info.header_offset)
        raw = fp.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != _LOCAL_SIGNATURE:
            raise bad_file(
                f"archive entry {info.filename!r}: no local header where the "
                "central directory says; not a well-formed zip"
            )
        _sig, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
        end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
        if info.flag_bits & 0x08:
            end += 12  # a data descriptor follows (12 bytes at least)
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise bad_file(
                f"archive entries {name!r} and {other!r} overlap; refusing a possible zip bomb"
            )
    if spans and spans[-1][1] > zf.start_dir:
        raise bad_file(f"archive entry {spans[-1][2]!r} runs into the central directory")


class Budget:
    def __init__(self, limit: int):
        self.limit, self.used = limit, 0


def extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: Budget) -> None:
    """Unpack one member, refusing as soon as it writes more than declared or the total cap."""
    written = 0
    with open(dest, "xb") as out:
        try:
            src = zf.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
            raise bad_file(f"archive entry {info.filename!r} cannot be read ({exc})") from exc
        with src:
            while True:
                try:
                    chunk = src.read(1 << 20)
                except (
                    zipfile.BadZipFile,
                    EOFError,
                    ValueError,
                    OSError,
                    RuntimeError,
                    NotImplementedError,
                ) as exc:  # CRC mismatch, truncation, zlib/lzma errors
                    raise bad_file(f"archive entry {info.filename!r} is corrupt ({exc})") from exc
                if not chunk:
                    break
                written += len(chunk)
                budget.used += len(chunk)
                if written > info.file_size:
                    raise bad_file(
                        f"archive entry {info.filename!r} unpacks to more than its declared "
                        f"{info.file_size} bytes; refusing a possible zip bomb"
                    )
                if budget.used > budget.limit:
                    raise bad_file(
                        f"the archive unpacks to more than the limit of {budget.limit} bytes"
                    )
                out.write(chunk)
