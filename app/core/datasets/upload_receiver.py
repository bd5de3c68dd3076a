"""Receiving an upload body: streamed to a scratch file within the size cap, never held in memory.

``open_upload`` refuses a declared Content-Length over the cap, then returns an
``UploadReceiver`` that is fed the request body chunk by chunk. It writes the one uploaded
file (a raw body, or the ``file`` part of a multipart/form-data body, parsed as it streams)
to a private scratch directory in the store, counting bytes as they arrive and refusing
with 413 the moment the cap is passed. ``receive`` drives it from an async stream of chunks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from app.core.artifacts.store import ArtifactStore
from app.core.datasets.archives import UploadLimits, bad_file, too_large
from app.core.errors import InvalidInput, RequestTimeout
from app.core.settings import Settings

try:  # python-multipart >= 0.0.13
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # older releases ship the same parser as `multipart`
    from multipart.exceptions import MultipartParseError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and small fields beside the file
MAX_FIELD_BYTES = 1024  # a form field other than the file (e.g. name)
MAX_HEADER_BYTES = 8192  # one part header
FLUSH_BYTES = 1 << 20  # body bytes gathered before one write off the event loop


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

    def __init__(
        self,
        scratch: Path,
        limits: UploadLimits,
        *,
        multipart_boundary: bytes | None,
        filename: str | None,
    ):
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
            self._parser = MultipartParser(
                multipart_boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
            )
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
                raise InvalidInput(
                    f"form field {self._part!r} is longer than {MAX_FIELD_BYTES} bytes",
                    field=self._part,
                )

    def _part_end(self) -> None:
        if self._part not in (None, "file"):
            try:
                self.fields[self._part] = self._field.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"form field {self._part!r} is not UTF-8 text", field=self._part
                ) from exc
        self._part = None

    def _end(self) -> None:
        self._ended = True


def open_upload(
    store: ArtifactStore,
    settings: Settings,
    *,
    content_type: str | None,
    content_length: str | None,
    filename: str | None,
) -> UploadReceiver:
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
    return UploadReceiver(
        store.scratch_dir(), limits, multipart_boundary=boundary, filename=filename
    )


async def _timed(chunks: AsyncIterator[bytes], settings: Settings) -> AsyncIterator[bytes]:
    """The body's chunks, cut off (408) when one takes too long or the average is too slow.

    A slowloris client sending 100 bytes a second would otherwise hold a scratch file, an
    upload slot and a connection for as long as it likes.
    """
    idle = settings.upload_idle_timeout_seconds
    min_rate = settings.upload_min_bytes_per_second
    it, start, seen = chunks.__aiter__(), time.monotonic(), 0
    while True:
        try:
            chunk = await asyncio.wait_for(it.__anext__(), timeout=idle)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(
                f"the upload sent nothing for {idle:g} s (GANFORGE_UPLOAD_IDLE_TIMEOUT_SECONDS)",
                field="file",
            ) from None
        seen += len(chunk)
        elapsed = time.monotonic() - start
        if elapsed > idle and seen < min_rate * elapsed:
            raise RequestTimeout(
                f"the upload arrived at {seen / elapsed:.0f} bytes/s, under the minimum of "
                f"{min_rate:g} (GANFORGE_UPLOAD_MIN_BYTES_PER_SECOND)",
                field="file",
            )
        yield chunk


async def receive(
    chunks: AsyncIterator[bytes],
    store: ArtifactStore,
    settings: Settings,
    *,
    content_type: str | None,
    content_length: str | None,
    filename: str | None,
) -> ReceivedUpload:
    """Stream a request body to scratch; the caller removes ``result.scratch`` when done.

    Chunks are counted as they arrive (413 at once past the cap), written in batches off the
    event loop, and cut off (408) when the body is idle or too slow.
    """
    receiver = await asyncio.to_thread(
        open_upload,
        store,
        settings,
        content_type=content_type,
        content_length=content_length,
        filename=filename,
    )
    try:
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in _timed(chunks, settings):
            receiver.count(len(chunk))
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= FLUSH_BYTES:
                await asyncio.to_thread(receiver.feed, b"".join(pending))
                pending, pending_bytes = [], 0
        await asyncio.to_thread(receiver.feed, b"".join(pending))
        return await asyncio.to_thread(receiver.finish)
    except BaseException:
        await asyncio.to_thread(receiver.discard)
        raise
