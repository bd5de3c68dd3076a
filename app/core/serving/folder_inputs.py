"""The images of a folder to translate: an uploaded zip checked, planned and unpacked.

Every guard of a dataset upload applies (app.core.datasets.archives): the central directory
is checked whole before a byte is unpacked (entry names -- no zip-slip, links, encryption,
duplicates --, the entry count, the declared unpacked size, expansion ratios, overlapping
members), members are unpacked counting what is written, and the images' pixels are summed
from their headers against the upload pixel cap before any is decoded.

The folder structure is kept: ``photos/cat.jpg`` becomes ``photos/cat.png`` in the result.
Members that are not images by their extension are skipped (named in the report); junk a
zip tool adds (``__MACOSX/``, dotfiles, Thumbs.db) is ignored. Two members that would give
the same PNG (``x.jpg`` and ``x.png``) are a 422 naming both. Whether a member decodes is
the worker's to find: an undecodable image is reported, not a refusal of the whole folder.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.core.datasets.archives import Entries, UploadLimits, bad_file, check_archive, open_zip
from app.core.datasets.members import check_pixels, junk, unpack
from app.core.errors import UnsupportedMedia
from app.core.settings import Settings
from gan_core.data import IMAGE_EXTENSIONS

MANIFEST = "manifest.json"  # beside the images folder: the images in order, and the skipped
IMAGES = "images"
ACCEPTED = (
    "a .zip of images (png/jpeg/bmp/webp/gif, in any folders) as the multipart form field "
    "'file' or as the raw body (Content-Type: application/zip)"
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class FolderInputs:
    """What a checked archive holds: its images' paths (POSIX, under ``images/``) in name
    order, and the names of the members skipped as not images."""

    images: list[str]
    skipped: list[str]

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps({"images": self.images, "skipped": self.skipped}))

    @classmethod
    def read(cls, folder: Path) -> FolderInputs:
        raw = json.loads((folder / MANIFEST).read_text())
        return cls(list(raw["images"]), list(raw["skipped"]))


def output_name(image: str) -> str:
    """The result's member for an input image: its path with the suffix ``.png``."""
    return str(PurePosixPath(image).with_suffix(".png"))


def plan_inputs(entries: Entries) -> tuple[Entries, list[str]]:
    """The members to unpack (images) and the names of those skipped (not images)."""
    files = [(info, parts) for info, parts in entries if not info.is_dir() and not junk(parts)]
    images = [
        (info, parts)
        for info, parts in files
        if PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS
    ]
    skipped = sorted(info.filename for info, parts in files if (info, parts) not in images)
    if not images:
        raise bad_file(f"the archive holds no images; send {ACCEPTED}")
    folders = {p[:i] for _, p in images for i in range(1, len(p))}
    outputs: dict[str, str] = {}
    for info, parts in sorted(images, key=lambda e: e[1]):
        if parts in folders:
            raise bad_file(f"archive entry {info.filename!r} is both a file and a folder")
        out = output_name("/".join(parts))
        if out in outputs:
            raise bad_file(
                f"archive entries {outputs[out]!r} and {info.filename!r} would both be "
                f"translated to {out!r}; rename one"
            )
        outputs[out] = info.filename
    return sorted(images, key=lambda e: e[1]), skipped


def is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _ZIP_MAGIC


def unpack_inputs(archive: Path, settings: Settings, folder: Path) -> FolderInputs:
    """Check the archive and unpack its images into ``folder/images`` (``folder`` made here),
    with the manifest beside; 415 unless a zip, 422/413 naming the rule it broke (field
    ``file``). The caller removes ``folder`` on failure."""
    if not is_zip(archive):
        raise UnsupportedMedia(f"not a zip archive; send {ACCEPTED}", field="file")
    limits = UploadLimits.of(settings)
    folder.mkdir()
    zf = open_zip(archive, limits)
    try:
        plan, skipped = plan_inputs(check_archive(zf, limits))
        root = folder / IMAGES
        unpack(zf, plan, root, limits)
    except zipfile.BadZipFile as exc:  # a member's local header the checks did not reach
        raise bad_file(f"not a readable zip archive ({exc})") from exc
    finally:
        zf.close()
    check_pixels(root, plan, limits.max_pixels)
    inputs = FolderInputs(["/".join(parts) for _, parts in plan], skipped)
    inputs.write(folder)
    return inputs
