"""One image sent in a request body, read under the upload caps: bytes, then pixels from the
header, then the pixels themselves.

The body is a raw image (``Content-Type: image/png``, ``image/jpeg``, any ``image/*`` or
``application/octet-stream``) or ``multipart/form-data`` with the image in the form field
``image``. It is read into memory as it arrives, refused (413) the moment it passes the byte
cap; its width x height is read from the header and refused (413) past the pixel cap before
a pixel is decoded. Every refusal names the field ``image``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.errors import InvalidInput, RequestTimeout, TooLarge, UnsupportedMedia
from app.core.settings import Settings
from gan_core.data.files import MAX_IMAGE_PIXELS

try:  # python-multipart >= 0.0.13
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # older releases ship the same parser as `multipart`
    from multipart.exceptions import MultipartParseError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

FIELD = "image"  # the multipart form field, and the field every refusal names
MAX_IMAGE_BYTES = 32 << 20  # an image to translate; the dataset upload cap, if lower, wins
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers beside the image
PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF")  # the decoders that see user bytes
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
ACCEPTED = (
    "a PNG, JPEG, BMP, WebP or GIF image as the raw body (Content-Type: image/png, ...) or "
    f"as the multipart form field {FIELD!r}"
)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int  # the image file
    max_pixels: int  # width x height, from the header

    @classmethod
    def of(cls, settings: Settings) -> ImageLimits:
        """The dataset upload caps, and at most what one image of a dataset may be."""
        return cls(
            max_bytes=min(settings.max_upload_bytes, MAX_IMAGE_BYTES),
            max_pixels=min(settings.max_upload_pixels, MAX_IMAGE_PIXELS),
        )


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the image is larger than the limit of {limit} bytes", field=FIELD)


def _bad(detail: str) -> InvalidInput:
    return InvalidInput(detail, field=FIELD)


def body_kind(content_type: str | None) -> bytes | None:
    """None for a raw image body, the boundary for multipart/form-data; 415 otherwise."""
    mime, params = parse_options_header(content_type or "")
    mime = mime.lower()
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise _bad("multipart/form-data without a boundary")
        return bytes(boundary)
    if mime.startswith(b"image/") or mime == b"application/octet-stream":
        return None
    shown = mime.decode("latin-1") or "none"
    raise UnsupportedMedia(f"Content-Type {shown}: send {ACCEPTED}", field=FIELD)


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    content_length: str | None,
    limits: ImageLimits,
    idle_seconds: float,
) -> bytes:
    """The image file a request body carries (raw, or the form field ``image``), within caps."""
    boundary = body_kind(content_type)
    cap = limits.max_bytes + (FORM_OVERHEAD if boundary else 0)
    try:
        declared = int(content_length) if content_length is not None else None
    except ValueError:
        declared = None
    if declared is not None and declared > cap:
        raise _too_large(limits.max_bytes)
    body = bytearray()
    it = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(it.__anext__(), timeout=idle_seconds)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestTimeout(
                f"the request body sent nothing for {idle_seconds:g} s", field=FIELD
            ) from None
        body += chunk
        if len(body) > cap:
            raise _too_large(limits.max_bytes)
    data = bytes(body) if boundary is None else _form_image(bytes(body), boundary)
    if not data:
        raise _bad(f"the image is empty (0 bytes): send {ACCEPTED}")
    if len(data) > limits.max_bytes:
        raise _too_large(limits.max_bytes)
    return data


class _FormImage:
    """Collects the one ``image`` part of a multipart/form-data body."""

    def __init__(self) -> None:
        self.image: bytearray | None = None
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._in_image = False
        self.ended = False

    def part_begin(self) -> None:
        self._headers, self._name, self._value, self._in_image = {}, b"", b"", False

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name = self._value = b""

    def headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name == FIELD:
            if self.image is not None:
                raise _bad(f"send one image (the form has more than one {FIELD!r})")
            self.image, self._in_image = bytearray(), True
        elif b"filename" in opts:
            raise _bad(f"send the image as the multipart form field {FIELD!r}, not {name!r}")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_image and self.image is not None:
            self.image += data[start:end]

    def end(self) -> None:
        self.ended = True


def _form_image(body: bytes, boundary: bytes) -> bytes:
    """The one ``image`` part of a multipart/form-data body (other fields are ignored)."""
    form = _FormImage()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": form.part_begin,
            "on_header_field": form.header_field,
            "on_header_value": form.header_value,
            "on_header_end": form.header_end,
            "on_headers_finished": form.headers_finished,
            "on_part_data": form.part_data,
            "on_end": form.end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise _bad(f"malformed multipart/form-data body: {exc}") from exc
    if form.image is None:
        raise _bad(f"no image: send it as the multipart form field {FIELD!r}")
    if not form.ended:
        raise _bad("incomplete multipart/form-data body (no closing boundary)")
    return bytes(form.image)


def open_image(data: bytes, limits: ImageLimits) -> PILImage:
    """The image opened (its header read, no pixel decoded); 413 past the pixel cap."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own cap, far above ours
        raise TooLarge(f"the image has too many pixels ({exc})", field=FIELD) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _bad(f"not a readable image ({exc}); send {ACCEPTED}") from exc
    w, h = im.size
    if w * h > limits.max_pixels:
        raise TooLarge(
            f"the image is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}",
            field=FIELD,
        )
    if w < 1 or h < 1:
        raise _bad(f"the image is {w}x{h} pixels")
    return im


def decode(im: PILImage) -> PILImage:
    """An opened image's pixels, as Pillow mode L (grey) or RGB; 422 if they cannot be read."""
    from PIL import Image

    try:
        im.load()
        if im.mode in _GRAY_MODES:
            return im.convert("L")
        return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _bad(f"the image's pixels cannot be read ({exc})") from exc
