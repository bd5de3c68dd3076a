"""Dataset uploads: check a received file, unpack it safely, validate it, record it.

``create_dataset`` tells the file's type from its magic bytes (415 unless a zip or npz),
checks the archive (entry names, links, entry count, declared sizes, expansion ratio) before
unpacking anything, unpacks while counting what is actually written, validates with
gan_core's loaders (Pillow with a pixel cap for images; ``allow_pickle=False`` for npz),
moves the finished directory into ``datasets/<id>`` with one rename, and only then records
the row. On any failure nothing is left in the store or the database. Receiving the body is
``app.core.datasets.upload_receiver``'s job; ``upload_dataset`` runs both.

Recorded ``image_size``: for an npz, the arrays' side (H == W). For a zip of images, the side
of the centre-cropped square of the first image in the order the loader reads them
(min(width, height)); images may differ in size, and training resizes them all anyway.
A zip of A/ + B/ (trainA/ + trainB/) or AB/ folders is a dataset of pairs or of two domains,
built by ``app.core.datasets.pair_uploads``; its record says each domain's facts.
"""

from __future__ import annotations

import asyncio
import shutil
import zipfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TypeVar

from sqlalchemy.orm import Session

from app.core.artifacts.store import LocalStore
from app.core.datasets.archives import (
    Entries,
    UploadLimits,
    bad_file,
    check_archive,
    open_zip,
)
from app.core.datasets.members import (
    VALIDATE_SIZE,
    Summary,
    check_pixels,
    junk,
    loader_error,
    unpack,
)
from app.core.datasets.npy import inspect_npz
from app.core.datasets.pair_uploads import build_pairs, plan_pairs
from app.core.datasets.upload_receiver import ReceivedUpload, receive
from app.core.db import session_scope
from app.core.errors import InvalidInput, Unavailable, UnsupportedMedia
from app.core.jobs.limits import check_storage
from app.core.models import Dataset, new_id
from app.core.settings import Settings
from gan_core.data import IMAGE_EXTENSIONS, DatasetError
from gan_core.data.files import load_image_folder
from gan_core.data.pairs import PAIRINGS

T = TypeVar("T")
ACCEPTED = (
    "a .zip of images (png/jpeg/bmp/webp/gif; one subfolder per class for labels), a .zip of "
    "pairs or two domains (folders A/ and B/, trainA/ and trainB/, or AB/ of side-by-side "
    "images), or a .npz holding a uint8 array 'x' (N×H×W or N×H×W×C) and optional integer "
    "labels 'y'"
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive


# --------------------------------------------------------------------------- datasets


def _detect_kind(upload: ReceivedUpload, zf_names: list[str] | None) -> str:
    if upload.filename and upload.filename.lower().endswith(".npz"):
        return "npz"
    return "npz" if zf_names is not None and "x.npy" in zf_names else "image-folder"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _ZIP_MAGIC


def _plan_images(entries: Entries) -> Entries:
    """Which members to unpack where: loose images, or one folder per class, under one root."""
    files = [(info, parts) for info, parts in entries if not info.is_dir() and not junk(parts)]
    if not files:
        raise bad_file(f"the archive holds no images; upload {ACCEPTED}")
    for info, parts in files:
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            raise bad_file(
                f"archive entry {info.filename!r} is not an image "
                f"(accepted: {', '.join(IMAGE_EXTENSIONS)})"
            )
    # Images inside one top-level folder (or a chain of them): that folder is the root.
    while all(len(p) >= 2 for _, p in files) and len({p[0] for _, p in files}) == 1:
        files = [(info, parts[1:]) for info, parts in files]
    folders = {p[:i] for _, p in files for i in range(1, len(p))}
    for info, parts in files:
        if parts in folders:
            raise bad_file(f"archive entry {info.filename!r} is both a file and a folder")
    loose = [info.filename for info, p in files if len(p) == 1]
    nested = [info.filename for info, p in files if len(p) == 2]
    deep = [info.filename for info, p in files if len(p) > 2]
    if deep:
        raise bad_file(
            f"archive entry {deep[0]!r} is nested too deeply: put images directly in the "
            "archive (unlabelled) or in one folder per class (labelled)"
        )
    if loose and nested:
        raise bad_file(
            f"the archive mixes loose images ({loose[0]!r}) with class folders "
            f"({nested[0]!r}): use one layout or the other"
        )
    return files


def _build_image_folder(
    entries: Entries, zf: zipfile.ZipFile, limits: UploadLimits, build: Path
) -> Summary:
    plan = _plan_images(entries)
    root = build / "images"
    names = unpack(zf, plan, root, limits)
    check_pixels(root, plan, limits.max_pixels)
    try:
        images, _labels, loaded = load_image_folder(root, VALIDATE_SIZE)
    except DatasetError as exc:
        raise loader_error(exc, root, names, "the archive") from exc
    from PIL import Image  # lazy; the loader has just decoded every file with it

    first = min(root.joinpath(*parts) for _, parts in plan)
    with Image.open(first) as im:
        side = min(im.size)
    return Summary(
        "image-folder",
        "images",
        len(images),
        loaded.channels,
        side,
        loaded.num_classes,
        list(loaded.class_names) if loaded.class_names else None,
    )


def _build_npz(
    upload: ReceivedUpload, zf: zipfile.ZipFile, limits: UploadLimits, build: Path
) -> Summary:
    shown = upload.filename or "the upload"
    check_archive(zf, limits)
    summary = inspect_npz(zf, limits, shown)
    zf.close()
    upload.path.rename(build / "data.npz")
    return Summary(
        "npz", "data.npz", summary.num_images, summary.channels, summary.side, summary.num_classes
    )


def _dataset_name(name: str | None, filename: str | None) -> str:
    if name is None:
        stem = PurePosixPath(filename).stem if filename else ""
        name = stem.strip() or "upload"
    name = name.strip()
    if not 1 <= len(name) <= 200 or any(ord(c) < 32 for c in name):
        raise InvalidInput("name must be 1 to 200 printable characters", field="name")
    return name


def create_dataset(
    session: Session,
    store: LocalStore,
    settings: Settings,
    upload: ReceivedUpload,
    *,
    name: str | None = None,
    pairing: str | None = None,
    owner_id: str | None = None,
) -> Dataset:
    """Validate a received upload, move it into ``datasets/<id>`` and record it (committed).

    ``pairing`` (auto, paired, unpaired) says how an archive of A/ and B/ folders is read.
    Raises UnsupportedMedia (415) or InvalidInput (422); then nothing new is in the store or
    the database. The caller still discards ``upload.scratch``.
    """
    limits = UploadLimits.of(settings)
    name = _dataset_name(name if name is not None else upload.fields.get("name"), upload.filename)
    pairing = pairing if pairing is not None else upload.fields.get("pairing", "auto")
    if pairing not in PAIRINGS:
        raise InvalidInput(f"pairing must be one of {', '.join(PAIRINGS)}", field="pairing")
    if not _is_zip(upload.path):
        raise UnsupportedMedia(f"not a zip or npz file; upload {ACCEPTED}", field="file")
    build = upload.scratch / "dataset"
    build.mkdir()
    zf = open_zip(upload.path, limits)
    try:
        kind = _detect_kind(upload, zf.namelist())
        if kind == "npz":
            summary = _build_npz(upload, zf, limits, build)
        else:
            entries = check_archive(zf, limits)
            pairs = plan_pairs(entries)
            if pairs is not None:
                summary = build_pairs(zf, pairs, limits, build, pairing)
            else:
                summary = _build_image_folder(entries, zf, limits, build)
        if pairing != "auto" and summary.domains is None:
            raise InvalidInput(
                "pairing is only for archives of two domains (A/ and B/ folders)",
                field="pairing",
            )
    finally:
        zf.close()
    upload.path.unlink(missing_ok=True)

    dataset_id = new_id("ds")
    final = store.dataset_dir(dataset_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    build.rename(final)  # one rename: the dataset appears whole or not at all
    try:
        key = store.key_of(final)
        if owner_id is not None:
            check_storage(session, settings, owner_id=owner_id, adding=store.usage_bytes(key))
        store.publish(key)  # uploaded (S3) before it is recorded
        row = Dataset(
            id=dataset_id,
            owner_id=owner_id,
            name=name,
            kind=summary.kind,
            path=f"{key}/{summary.entry}",
            size_bytes=store.usage_bytes(key),
            num_images=summary.num_images,
            channels=summary.channels,
            image_size=summary.image_size,
            num_classes=summary.num_classes,
            class_names=summary.class_names,
            domains=summary.domains,
            val_size=summary.val_size,
        )
        session.add(row)
        session.commit()  # recorded after the files landed
    except BaseException:
        session.rollback()
        store.discard(f"datasets/{dataset_id}")
        raise
    return row


class UploadGate:
    """Bounds what uploads may cost one API process at a time.

    At most ``max_concurrent_uploads`` bodies are received at once (more: 503), and the heavy
    part -- unpacking, decoding every image, streaming an npz through -- runs on a pool of
    ``upload_validation_workers`` threads, so concurrent uploads queue for it instead of
    multiplying CPU and memory.
    """

    def __init__(self, settings: Settings):
        self.capacity = settings.max_concurrent_uploads
        self.active = 0  # touched only on the event loop
        self.pool = ThreadPoolExecutor(
            settings.upload_validation_workers, thread_name_prefix="ganforge-upload"
        )

    def admit(self) -> None:
        if self.active >= self.capacity:
            raise Unavailable(
                f"{self.active} uploads are being received (the limit per API "
                "process); try again shortly"
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


async def upload_dataset(
    chunks: AsyncIterator[bytes],
    store: LocalStore,
    settings: Settings,
    gate: UploadGate,
    *,
    content_type: str | None,
    content_length: str | None,
    filename: str | None,
    name: str | None,
    owner_id: str,
    pairing: str | None = None,
) -> Dataset:
    """Receive an upload body, then build and record the dataset; scratch is always removed."""
    gate.admit()
    try:
        upload = await receive(
            chunks,
            store,
            settings,
            content_type=content_type,
            content_length=content_length,
            filename=filename,
        )

        def create() -> Dataset:
            with session_scope(settings.resolved_database_url) as session:
                return create_dataset(
                    session, store, settings, upload, name=name, pairing=pairing, owner_id=owner_id
                )

        try:
            return await gate.run(create)
        finally:
            await asyncio.to_thread(shutil.rmtree, upload.scratch, True)
    finally:
        gate.leave()
