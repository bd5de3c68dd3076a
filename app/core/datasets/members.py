"""Image members of an upload archive: which are junk, unpacking them, their pixel budget, and
the loaders' errors told in the names the user uploaded. Shared by image and pair uploads."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from app.core.datasets.archives import Budget, Entries, UploadLimits, bad_file, extract, over_limit
from app.core.errors import InvalidInput
from gan_core.data import DatasetError

VALIDATE_SIZE = 4  # images are decoded in full but kept at 4x4: validation needs no more memory
_JUNK_FILES = {"thumbs.db", "desktop.ini"}


def junk(parts: tuple[str, ...]) -> bool:
    """Files a zip tool adds that are not data: __MACOSX/, dotfiles, Thumbs.db, desktop.ini."""
    return (
        "__MACOSX" in parts
        or any(p.startswith(".") for p in parts)
        or parts[-1].lower() in _JUNK_FILES
    )


def unpack(zf: zipfile.ZipFile, plan: Entries, root: Path, limits: UploadLimits) -> dict[str, str]:
    """Unpack the planned members under `root` (made here), counting what is written.

    Returns each member's path under root (with '/') mapped to its name in the archive.
    """
    root.mkdir()
    budget = Budget(limits.max_unpacked_bytes)
    names: dict[str, str] = {}
    base = root.resolve()
    for info, parts in plan:
        dest = root.joinpath(*parts)
        if not dest.resolve().is_relative_to(base):  # entry_parts makes this impossible
            raise bad_file(f"archive entry {info.filename!r} points outside the archive")
        dest.parent.mkdir(parents=True, exist_ok=True)
        extract(zf, info, dest, budget)
        names["/".join(parts)] = info.filename
    return names


def loader_error(exc: DatasetError, root: Path, names: dict[str, str], shown: str) -> InvalidInput:
    """The loader's message with server paths replaced by the names the user uploaded."""
    msg, prefix = str(exc), f"{root}/"
    if msg.startswith(prefix):
        rest = msg[len(prefix) :]
        for rel, original in names.items():
            if rest.startswith(rel + ":"):
                msg = f"archive entry {original!r}{rest[len(rel) :]}"
                break
    return bad_file(msg.replace(prefix, "").replace(str(root), shown))


def check_pixels(root: Path, plan: Entries, limit: int) -> None:
    """Sum the images' pixels from their headers (nothing decoded yet); 413 past the budget.

    Decoding is what costs: 200 all-black 4096x4096 PNGs are 3 MB of upload and 3.4 billion
    pixels (22 s of CPU) to decode.
    """
    from PIL import Image

    total = 0
    for info, parts in plan:
        try:
            with Image.open(root.joinpath(*parts)) as im:  # reads the header only
                w, h = im.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # the loader names the unreadable file
        total += w * h
        if total > limit:
            raise over_limit(
                f"the archive's images hold more than {limit} pixels (the limit per "
                f"upload; reached at {info.filename!r})"
            )


@dataclass
class Summary:
    """What an upload's record says about its data."""

    kind: str  # npz | image-folder | paired | unpaired
    entry: str  # path of the data inside the dataset directory
    num_images: int  # images; pairs (paired); images of A and B together (unpaired)
    channels: int  # of the images; of domain B for pairs
    image_size: int
    num_classes: int | None = None
    class_names: list[str] | None = None
    domains: dict[str, dict[str, int]] | None = None  # pairs: per domain A and B
    val_size: int | None = None  # pairs: how many are held out for validation
