"""The Client's translation methods: an image through a translation model's checkpoint
(pix2pix A → B, CycleGAN A ↔ B), and the grid of its held-out validation pairs."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from ganforge_client.checkpoints import Ema
from ganforge_client.models import Png
from ganforge_client.transport import Transport, params, png_of, seg

if TYPE_CHECKING:
    from PIL.Image import Image

    ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | Image

Direction = Literal["a2b", "b2a"]

# What the server decodes; anything else goes as application/octet-stream and the server says
# why it cannot read it (a 422 naming the field "image").
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})  # Pillow writes these


def media_type_of(data: bytes) -> str:
    """The image type of ``data`` by its first bytes (not by a file name)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, media_type in _SIGNATURES:
        if data.startswith(magic):
            return media_type
    return "application/octet-stream"


def image_body(image: Any) -> tuple[bytes, str]:
    """The request body and its Content-Type for ``image``: a path (str or PathLike), bytes
    (sent as they are, their type read from their first bytes), or a PIL image (sent as PNG)."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
    elif isinstance(image, str | os.PathLike):
        data = Path(image).read_bytes()
    elif hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image; Pillow not imported
        if image.mode not in _PNG_MODES:  # CMYK, YCbCr, ...: PNG has no such mode
            image = image.convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    else:
        raise TypeError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")
    return data, media_type_of(data)


class TranslationsApi(Transport):
    def _translator(self, job_id: str, ref: str) -> str:
        return f"/v1/jobs/{seg(job_id)}/checkpoints/{seg(ref)}"

    @overload
    def translate(
        self,
        job_id: str,
        image: ImageInput,
        ref: str = ...,
        *,
        direction: Direction | None = ...,
        ema: Ema | None = ...,
        image_out: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def translate(
        self,
        job_id: str,
        image: ImageInput,
        ref: str = ...,
        *,
        direction: Direction | None = ...,
        ema: Ema | None = ...,
        image_out: Literal[True],
    ) -> Image: ...
    def translate(
        self,
        job_id: str,
        image: ImageInput,
        ref: str = "latest",
        *,
        direction: Direction | None = None,
        ema: Ema | None = None,
        image_out: bool = False,
    ) -> Png | Image:
        """``image`` (a path, bytes, or a PIL image) translated by the checkpoint ``ref`` (its
        id, "latest" or "best") of a translation job: a Png (``checkpoint_id`` and ``step`` say
        which checkpoint "latest"/"best" resolved to), or with ``image_out=True`` a PIL image.
        ``direction``: "a2b" (the server's default) or "b2a" (unpaired models only); ``ema``:
        "auto" (the server's default), True or False. The same image and checkpoint always
        give the same bytes. A file the server cannot read, or one
        past its caps, raises Invalid with ``field == "image"``."""
        body, media_type = image_body(image)
        response = self.request(
            "POST",
            f"{self._translator(job_id, ref)}/translate",
            params=params(direction=direction, ema=ema),
            headers={"Content-Type": media_type},
            content=body,
        )
        png = png_of(response)
        return png.image() if image_out else png

    @overload
    def translations(
        self,
        job_id: str,
        ref: str = ...,
        *,
        n: int | None = ...,
        direction: Direction | None = ...,
        ema: Ema | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def translations(
        self,
        job_id: str,
        ref: str = ...,
        *,
        n: int | None = ...,
        direction: Direction | None = ...,
        ema: Ema | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def translations(
        self,
        job_id: str,
        ref: str = "latest",
        *,
        n: int | None = None,
        direction: Direction | None = None,
        ema: Ema | None = None,
        image: bool = False,
    ) -> Png | Image:
        """A PNG grid of the first ``n`` held-out validation examples (server default 8), a row
        each: input | translation | target (pairs only); the same bytes for the same
        arguments; ``image=True``: a PIL image."""
        query = params(n=n, direction=direction, ema=ema)
        response = self.request(
            "GET", f"{self._translator(job_id, ref)}/translations.png", params=query
        )
        png = png_of(response)
        return png.image() if image else png
