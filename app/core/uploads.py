"""Dataset uploads: receive a streamed body within caps, unpack it safely, validate, record it.

Two steps, both free of any web framework:

1. ``open_upload`` refuses a declared Content-Length over the cap, then returns an
   ``UploadReceiver`` that is fed the request body chunk by chunk. It writes the one uploaded
   file (a raw body, or the ``file`` part of a multipart/form-data body, parsed as it streams)
   to a private scratch directory in the store, counting bytes as they arrive and refusing
   with 413 the moment the cap is passed. Nothing holds the whole body in memory.
2. ``create_dataset`` tells the file's type from its magic bytes (415 unless a zip or npz),
   checks the archive (entry names, links, entry count, declared sizes, expansion ratio) before
   unpacking anything, unpacks while counting what is actually written, validates with
   gan_core's loaders (Pillow with a pixel cap for images; ``allow_pickle=False`` for npz),
   moves the finished directory into ``datasets/<id>`` with one rename, and only then records
   the row. On any failure nothing is left in the store or the database.

Recorded ``image_size``: for an npz, the arrays' side (H == W). For a zip of images, the side
of the centre-cropped square of the first image in the order the loader reads them
(min(width, height)); images may differ in size, and training resizes them all anyway.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy.orm import Session

from app.core.archives import (
    Budget,
    Entries,
    UploadLimits,
    bad_file,
    check_archive,
    check_npy_headers,
    extract,
    open_zip,
    too_large,
)
from app.core.errors import InvalidInput, UnsupportedMedia
from app.core.limits import check_storage
from app.core.models import Dataset, new_id
from app.core.settings import Settings
from app.core.store import LocalStore
from gan_core.data import IMAGE_EXTENSIONS, DatasetError
from gan_core.data.files import load_image_folder, load_npz

try:  # python-multipart >= 0.0.13
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # older releases ship the same parser as `multipart`
    from multipart.exceptions import MultipartParseError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

ACCEPTED = (
    "a .zip of images (png/jpeg/bmp/webp/gif; one subfolder per class for labels) or a .npz "
    "holding a uint8 array 'x' (N×H×W or N×H×W×C) and optional integer labels 'y'"
)
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and small fields beside the file
MAX_FIELD_BYTES = 1024  # a form field other than the file (e.g. name)
MAX_HEADER_BYTES = 8192  # one part header
VALIDATE_SIZE = 4  # images are decoded in full but kept at 4x4: validation needs no more memory
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_JUNK_FILES = {"thumbs.db", "desktop.ini"}


# --------------------------------------------------------------------------- receiving


@dataclass
class ReceivedUpload:
    path: Path  # the uploaded bytes, inside `scratch`
    scratch: Path  # private directory; the caller removes it
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)  # other multipart form fields


class UploadReceiver:
    """Writes the uploaded file to scratch as the body arrives; never holds the body in memory.

    ``count(n)`` is cheap (no I/O) and is called for every chunk as it arrives, so an
    over-long body is refused at once; ``feed(data)`` parses and writes (possibly batched,
    off the event loop); ``finish()`` checks the body was complete; ``discard()`` removes
    the scratch directory and must always be called.
    """

    def __init__(self, scratch: Path, limits: UploadLimits, *, multipart_boundary: bytes | None,
                 filename: str | None):
        self.scratch = scratch
        self.limits = limits
        self.path = scratch / "upload.bin"
        self._out = open(self.path, "xb")  # noqa: SIM115 - closed in finish()/discard()
        self.filename = filename
        self.fields: dict[str, str] = {}
        self.size = 0  # bytes of the file written
        self.body_bytes = 0  # bytes of the body seen
        self.body_limit = limits.max_bytes + (FORM_OVERHEAD if multipart_boundary else 0)
        self._parser = None
        if multipart_boundary is not None:
            self._parser = MultipartParser(multipart_boundary, {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            })
            self._seen_file = False
            self._ended = False
            self._part: str | None = None  # "file", a field name, or None (ignored part)
            self._headers: dict[bytes, bytes] = {}
            self._hname = self._hvalue = b""
            self._field = bytearray()

    # -- the body

    def count(self, n: int) -> None:
        """Note n more body bytes; 413 once the body is over the cap."""
        self.body_bytes += n
        if self.body_bytes > self.body_limit:
            raise too_large(self.limits.max_bytes)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._parser is None:
            self._write(data)
            return
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise bad_file(f"malformed multipart/form-data body: {exc}") from exc

    def finish(self) -> ReceivedUpload:
        if self._parser is not None:
            try:
                self._parser.finalize()
            except MultipartParseError as exc:
                raise bad_file(f"malformed multipart/form-data body: {exc}") from exc
            if not self._seen_file:
                raise bad_file("no file: send it as the multipart form field 'file'")
            if not self._ended:
                raise bad_file("incomplete multipart/form-data body (no closing boundary)")
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        if self.size == 0:
            raise bad_file("the upload is empty")
        return ReceivedUpload(self.path, self.scratch, self.size, self.filename, dict(self.fields))

    def discard(self) -> None:
        self._out.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limits.max_bytes:
            raise too_large(self.limits.max_bytes)
        self._out.write(data)

    # -- multipart callbacks

    def _part_begin(self) -> None:
        self._part, self._headers, self._hname, self._hvalue = None, {}, b"", b""
        self._field = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]
        if len(self._hname) > MAX_HEADER_BYTES:
            raise bad_file("a multipart part header is too long")

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]
        if len(self._hvalue) > MAX_HEADER_BYTES:
            raise bad_file("a multipart part header is too long")

    def _header_end(self) -> None:
        self._headers[self._hname.strip().lower()] = self._hvalue.strip()
        self._hname = self._hvalue = b""

    def _headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self._seen_file:
                raise bad_file("send one file per upload (the form has more than one 'file')")
            self._seen_file = True
            self._part = "file"
            raw = opts.get(b"filename")
            if raw:
                # Only the last path component, whatever the client sent.
                self.filename = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
        elif b"filename" in opts:
            raise bad_file(f"send the file as the multipart form field 'file', not {name!r}")
        elif name:
            self._part = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self._write(data[start:end])
        elif self._part is not None:
            self._field += data[start:end]
            if len(self._field) > MAX_FIELD_BYTES:
                raise InvalidInput(f"form field {self._part!r} is longer than {MAX_FIELD_BYTES} bytes",
                                   field=self._part)

    def _part_end(self) -> None:
        if self._part not in (None, "file"):
            try:
                self.fields[self._part] = self._field.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"form field {self._part!r} is not UTF-8 text",
                                   field=self._part) from exc
        self._part = None

    def _end(self) -> None:
        self._ended = True


def open_upload(store: LocalStore, settings: Settings, *, content_type: str | None,
                content_length: str | None, filename: str | None) -> UploadReceiver:
    """A receiver for one upload body: a raw file, or multipart/form-data with a 'file' field.

    413 before anything is read when the declared Content-Length is over the cap.
    """
    limits = UploadLimits.of(settings)
    mime, params = parse_options_header(content_type or "")
    boundary = None
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise bad_file("multipart/form-data without a boundary")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = None
        limit = limits.max_bytes + (FORM_OVERHEAD if boundary else 0)
        if declared is not None and declared > limit:
            raise too_large(limits.max_bytes)
    if filename is not None:
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return UploadReceiver(store.scratch_dir(), limits, multipart_boundary=boundary, filename=filename)


# --------------------------------------------------------------------------- datasets


@dataclass
class _Summary:
    entry: str  # path of the data inside the dataset directory
    num_images: int
    channels: int
    image_size: int
    num_classes: int | None
    class_names: list[str] | None


def _detect_kind(upload: ReceivedUpload, zf_names: list[str] | None) -> str:
    if upload.filename and upload.filename.lower().endswith(".npz"):
        return "npz"
    return "npz" if zf_names is not None and "x.npy" in zf_names else "image-folder"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _ZIP_MAGIC


def _junk(parts: tuple[str, ...]) -> bool:
    """Files a zip tool adds that are not data: __MACOSX/, dotfiles, Thumbs.db, desktop.ini."""
    return (
        "__MACOSX" in parts
        or any(p.startswith(".") for p in parts)
        or parts[-1].lower() in _JUNK_FILES
    )


def _plan_images(entries: Entries) -> Entries:
    """Which members to unpack where: loose images, or one folder per class, under one root."""
    files = [(info, parts) for info, parts in entries if not info.is_dir() and not _junk(parts)]
    if not files:
        raise bad_file(f"the archive holds no images; upload {ACCEPTED}")
    for info, parts in files:
        if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
            raise bad_file(f"archive entry {info.filename!r} is not an image "
                       f"(accepted: {', '.join(IMAGE_EXTENSIONS)})")
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
        raise bad_file(f"archive entry {deep[0]!r} is nested too deeply: put images directly in the "
                   "archive (unlabelled) or in one folder per class (labelled)")
    if loose and nested:
        raise bad_file(f"the archive mixes loose images ({loose[0]!r}) with class folders "
                   f"({nested[0]!r}): use one layout or the other")
    return files


def _dataset_error(exc: DatasetError, root: Path, names: dict[str, str], shown: str) -> InvalidInput:
    """The loader's message with server paths replaced by the names the user uploaded."""
    msg, prefix = str(exc), f"{root}/"
    if msg.startswith(prefix):
        rest = msg[len(prefix):]
        for rel, original in names.items():
            if rest.startswith(rel + ":"):
                msg = f"archive entry {original!r}{rest[len(rel):]}"
                break
    return bad_file(msg.replace(prefix, "").replace(str(root), shown))


def _build_image_folder(upload: ReceivedUpload, zf: zipfile.ZipFile, limits: UploadLimits,
                        build: Path) -> _Summary:
    plan = _plan_images(check_archive(zf, limits))
    root = build / "images"
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
    try:
        images, _labels, info = load_image_folder(root, VALIDATE_SIZE)
    except DatasetError as exc:
        raise _dataset_error(exc, root, names, "the archive") from exc
    from PIL import Image  # lazy; the loader has just decoded every file with it

    first = min(root.joinpath(*parts) for _, parts in plan)
    with Image.open(first) as im:
        side = min(im.size)
    return _Summary("images", len(images), info.channels, side, info.num_classes,
                    list(info.class_names) if info.class_names else None)


def _build_npz(upload: ReceivedUpload, zf: zipfile.ZipFile, limits: UploadLimits,
               build: Path) -> _Summary:
    shown = upload.filename or "the upload"
    check_archive(zf, limits)
    check_npy_headers(zf, shown)
    zf.close()
    dest = build / "data.npz"
    upload.path.rename(dest)
    try:
        images, labels, info = load_npz(dest)
    except DatasetError as exc:
        raise bad_file(str(exc).replace(str(dest), shown)) from exc
    return _Summary("data.npz", len(images), info.channels, int(info.native_size or images.shape[-1]),
                    info.num_classes, None)


def _dataset_name(name: str | None, filename: str | None) -> str:
    if name is None:
        stem = PurePosixPath(filename).stem if filename else ""
        name = stem.strip() or "upload"
    name = name.strip()
    if not 1 <= len(name) <= 200 or any(ord(c) < 32 for c in name):
        raise InvalidInput("name must be 1 to 200 printable characters", field="name")
    return name


def create_dataset(session: Session, store: LocalStore, settings: Settings, upload: ReceivedUpload,
                   *, name: str | None = None, owner_id: str | None = None) -> Dataset:
    """Validate a received upload, move it into ``datasets/<id>`` and record it (committed).

    Raises UnsupportedMedia (415) or InvalidInput (422); then nothing new is in the store or
    the database. The caller still discards ``upload.scratch``.
    """
    limits = UploadLimits.of(settings)
    name = _dataset_name(name if name is not None else upload.fields.get("name"), upload.filename)
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
            summary = _build_image_folder(upload, zf, limits, build)
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
        row = Dataset(
            id=dataset_id, owner_id=owner_id, name=name, kind=kind,
            path=f"{key}/{summary.entry}", size_bytes=store.usage_bytes(key),
            num_images=summary.num_images, channels=summary.channels,
            image_size=summary.image_size, num_classes=summary.num_classes,
            class_names=summary.class_names,
        )
        session.add(row)
        session.commit()  # recorded after the files landed
    except BaseException:
        session.rollback()
        shutil.rmtree(final, ignore_errors=True)
        raise
    return row
