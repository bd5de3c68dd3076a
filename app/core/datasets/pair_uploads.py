"""Uploads of pairs and of two domains: a zip whose top level holds A/ + B/ (or trainA/ + trainB/),
or AB/ (pix2pix's side-by-side images).

The archive has passed every check the image uploads have (``check_archive``) before this
plans it; the members are unpacked with the same byte budget and their pixels summed from
the headers before gan_core's pair loader decodes them. The loader's refusals (a missing
partner, sizes that differ within a pair, a domain with no images, an odd-width AB image) are
422s naming the archive entry. The held-out validation names are written to ``split.json``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

from app.core.datasets.archives import Entries, UploadLimits, bad_file
from app.core.datasets.members import (
    VALIDATE_SIZE,
    Summary,
    check_pixels,
    junk,
    loader_error,
    unpack,
)
from gan_core.data import IMAGE_EXTENSIONS, DatasetError
from gan_core.data.pairs import AB_FOLDER, DOMAIN_FOLDERS, VAL_SHARE, PairDataset, load_pair_folder

_SKIPPED = {"testA", "testB"}  # CycleGAN's test split: not unpacked (the split is our own)
_PAIR_FOLDERS = {AB_FOLDER, *(f for pair in DOMAIN_FOLDERS for f in pair)}
ENTRY = "pairs"  # the folder inside the dataset directory


def plan_pairs(entries: Entries) -> Entries | None:
    """The members to unpack if the archive is one of pairs or two domains; else None.

    It is when its top level (below any single wrapping folder) holds only A, B, trainA,
    trainB, testA, testB or AB folders, at least one of them a folder of pairs.
    """
    files = [(info, parts) for info, parts in entries if not info.is_dir() and not junk(parts)]
    while (
        all(len(p) >= 2 for _, p in files)
        and len({p[0] for _, p in files}) == 1
        and files[0][1][0] not in _PAIR_FOLDERS
    ):
        files = [(info, parts[1:]) for info, parts in files]
    tops = {p[0] for _, p in files if len(p) >= 2}
    loose = [info.filename for info, p in files if len(p) == 1]
    if not tops & _PAIR_FOLDERS or not tops <= _PAIR_FOLDERS | _SKIPPED or loose:
        return None
    domains = [pair for pair in DOMAIN_FOLDERS if set(pair) & tops]
    if len(domains) > 1 or domains and AB_FOLDER in tops:
        layouts = ", ".join(f"{a}/ + {b}/" for a, b in domains) + (
            f", {AB_FOLDER}/" if AB_FOLDER in tops else ""
        )
        raise bad_file(f"the archive holds more than one layout of pairs ({layouts}): use one")
    plan = [(info, parts) for info, parts in files if parts[0] not in _SKIPPED]
    for info, parts in plan:
        if len(parts) > 2:
            raise bad_file(
                f"archive entry {info.filename!r} is nested too deeply: put images directly "
                f"in {parts[0]}/"
            )
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            raise bad_file(
                f"archive entry {info.filename!r} is not an image "
                f"(accepted: {', '.join(IMAGE_EXTENSIONS)})"
            )
    return plan


def build_pairs(
    zf: zipfile.ZipFile, plan: Entries, limits: UploadLimits, build: Path, pairing: str
) -> Summary:
    """Unpack the planned members into build/pairs, load them as pairs, write split.json."""
    root = build / ENTRY
    names = unpack(zf, plan, root, limits)
    check_pixels(root, plan, limits.max_pixels)
    try:
        ds = load_pair_folder(root, VALIDATE_SIZE, pairing=pairing)
    except DatasetError as exc:
        raise loader_error(exc, root, names, "the archive") from exc
    split = {
        "share": VAL_SHARE,
        "seed": 0,
        "pairing": ds.pairing,
        "val": {"A": list(ds.a.val_names), "B": list(ds.b.val_names)},
    }
    (build / "split.json").write_text(json.dumps(split, indent=1))
    return Summary(
        kind=ds.pairing,
        entry=ENTRY,
        num_images=len(ds),
        channels=ds.b.channels,
        image_size=ds.b.side,
        domains=domains_of(ds),
        val_size=len(ds.a.val_names) if ds.paired else len(ds.a.val_names) + len(ds.b.val_names),
    )


def domains_of(ds: PairDataset) -> dict[str, dict[str, int]]:
    """Each domain's images, channels, side (of its first image) and held-out images."""
    return {
        key: {
            "num_images": len(d),
            "channels": d.channels,
            "image_size": d.side,
            "val_images": len(d.val_names),
        }
        for key, d in (("A", ds.a), ("B", ds.b))
    }
