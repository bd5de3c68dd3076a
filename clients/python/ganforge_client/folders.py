"""The Client's folder translations: a zip (or a folder, zipped on the fly) translated by a
checkpoint on the server's worker, as a resource to poll, cancel, download and delete; and
``translate_folder``, which does all of that in one call."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ganforge_client.checkpoints import Ema
from ganforge_client.transport import CHUNK_BYTES, Transport, params, seg

Direction = Literal["a2b", "b2a"]
# What the server translates (by name); a folder's other files are left out of its zip.
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
_FINISHED = ("succeeded", "failed", "canceled")


class FolderProgress(BaseModel):
    model_config = ConfigDict(extra="allow")

    done: int
    total: int
    failed: int = 0


class FolderReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    translated: int | None = None
    failed: list[dict[str, Any]] = Field(default_factory=list)  # {name, error, status}
    skipped: list[str] = Field(default_factory=list)


class FolderTranslation(BaseModel):
    """A folder translation on the server (GET /v1/translations/{id})."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    job_id: str
    checkpoint_id: str
    checkpoint_step: int
    direction: str
    ema: bool
    filename: str | None = None
    progress: FolderProgress
    report: FolderReport = Field(default_factory=FolderReport)
    error: str | None = None
    result_bytes: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED


class TranslationFailed(Exception):
    """A folder translation that ended without succeeding; ``translation`` is its record."""

    def __init__(self, translation: FolderTranslation):
        self.translation = translation
        self.status, self.error = translation.status, translation.error
        reason = f": {translation.error}" if translation.error else ""
        p = translation.progress
        super().__init__(
            f"translation {translation.id} {translation.status} at {p.done}/{p.total}{reason}"
        )


def _form_quote(value: str) -> str:
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def folder_images(folder: Path) -> list[Path]:
    """The images under ``folder`` (any depth, by suffix, hidden ones left out), in name order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in FOLDER_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def zip_folder(folder: Path, target: Path, files: list[Path] | None = None) -> Path:
    """``files`` (default: every image under ``folder``) into a zip at ``target``, each under
    its path relative to ``folder`` (stored: images do not compress)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for path in files if files is not None else folder_images(folder):
            zf.write(path, arcname=path.relative_to(folder).as_posix())
    return target


def extract_result(archive: Path, out: Path) -> list[Path]:
    """The PNGs of a result.zip written under ``out`` (report.json left out); a member that
    would land outside ``out`` is refused."""
    out.mkdir(parents=True, exist_ok=True)
    base, written = out.resolve(), []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename == "report.json":
                continue
            target = (out / PurePosixPath(info.filename)).resolve()
            if not target.is_relative_to(base) or info.filename.startswith("/"):
                raise ValueError(f"result member {info.filename!r} points outside {out}")
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.part")
            with zf.open(info) as src, part.open("wb") as dst:
                while chunk := src.read(CHUNK_BYTES):
                    dst.write(chunk)
            part.replace(target)
            written.append(target)
    return written


class FoldersApi(Transport):
    def create_translation(
        self,
        job_id: str,
        source: str | os.PathLike[str],
        ref: str = "latest",
        *,
        direction: Direction | None = None,
        ema: Ema | None = None,
        idempotency_key: str | None = None,
    ) -> FolderTranslation:
        """Start translating a zip of images, or a folder (its images zipped first, their
        subfolders kept), with the checkpoint ``ref`` of a translation job; returns the queued
        translation (its ``checkpoint_id`` is fixed: a later 'latest' changes nothing). Sent
        again with the same ``idempotency_key`` and the same request, it returns the first
        translation; with another request, Conflict."""
        path = Path(source)
        if path.is_dir():
            with tempfile.TemporaryDirectory(prefix="ganforge-") as tmp:
                archive = zip_folder(path, Path(tmp) / f"{path.resolve().name or 'folder'}.zip")
                return self._post_zip(job_id, ref, archive, direction, ema, idempotency_key)
        return self._post_zip(job_id, ref, path, direction, ema, idempotency_key)

    def _post_zip(
        self,
        job_id: str,
        ref: str,
        path: Path,
        direction: str | None,
        ema: Ema | None,
        idempotency_key: str | None,
    ) -> FolderTranslation:
        size = path.stat().st_size
        boundary = secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_form_quote(path.name)}"\r\nContent-Type: application/zip\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            with path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    yield chunk
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        raw = self._json(
            "POST",
            f"/v1/jobs/{seg(job_id)}/checkpoints/{seg(ref)}/translations",
            params=params(direction=direction, ema=ema),
            content=body(),
            headers=headers,
        )
        return FolderTranslation.model_validate(raw)

    def get_translation(self, translation_id: str) -> FolderTranslation:
        raw = self._json("GET", f"/v1/translations/{seg(translation_id)}")
        return FolderTranslation.model_validate(raw)

    def list_translations(self, *, status: str | None = None) -> list[FolderTranslation]:
        """Your folder translations, newest first (every page)."""
        out: list[FolderTranslation] = []
        cursor = None
        while True:
            page = self._json(
                "GET", "/v1/translations", params=params(status=status, cursor=cursor, limit=100)
            )
            out += [FolderTranslation.model_validate(t) for t in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def cancel_translation(self, translation_id: str) -> FolderTranslation:
        raw = self._json("POST", f"/v1/translations/{seg(translation_id)}/cancel")
        return FolderTranslation.model_validate(raw)

    def delete_translation(self, translation_id: str) -> None:
        self.request("DELETE", f"/v1/translations/{seg(translation_id)}")

    def wait_translation(
        self,
        translation_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        progress: Callable[[FolderTranslation], object] | None = None,
    ) -> FolderTranslation:
        """Poll until the translation is finished; it if it succeeded, else TranslationFailed
        (``.translation`` its record). ``progress(t)`` on every change; TimeoutError after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            now = self.get_translation(translation_id)
            if progress is not None and (last is None or (now.status, now.progress) != last):
                progress(now)
            last = (now.status, now.progress)
            if now.finished:
                if now.status != "succeeded":
                    raise TranslationFailed(now)
                return now
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"translation {translation_id} did not finish in time")
            time.sleep(poll)

    def download_translation(self, translation_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the result.zip (a PNG per image, report.json) to ``path``, streamed."""
        target = Path(path)
        with self._stream(f"/v1/translations/{seg(translation_id)}/result.zip") as response:
            part = target.with_name(f".{target.name}.part")
            try:
                with part.open("wb") as f:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        f.write(chunk)
                part.replace(target)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        return target

    def translate_folder(
        self,
        job_id: str,
        source: str | os.PathLike[str],
        out: str | os.PathLike[str],
        ref: str = "latest",
        *,
        direction: Direction | None = None,
        ema: Ema | None = None,
        progress: Callable[[FolderTranslation], object] | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
        keep: bool = False,
        idempotency_key: str | None = None,
    ) -> FolderTranslation:
        """Translate a folder (or a zip) of images on the server and write the PNGs under
        ``out``: a folder (``name.png`` for each ``name.*``, subfolders kept), or a path
        ending in .zip to keep the result zip as it is (with its report.json). Returns the
        finished translation: ``report.failed`` names the images that could not be
        translated (the others are written). The server's copy is deleted afterwards unless
        ``keep``; a failure or cancel raises TranslationFailed, a timeout cancels it."""
        made = self.create_translation(
            job_id, source, ref, direction=direction, ema=ema, idempotency_key=idempotency_key
        )
        try:
            done = self.wait_translation(made.id, timeout=timeout, poll=poll, progress=progress)
        except TimeoutError:
            self.cancel_translation(made.id)
            raise
        target = Path(out)
        if target.suffix.lower() == ".zip":
            self.download_translation(done.id, target)
        else:
            with tempfile.TemporaryDirectory(prefix="ganforge-") as tmp:
                archive = self.download_translation(done.id, Path(tmp) / "result.zip")
                extract_result(archive, target)
        if not keep:
            self.delete_translation(done.id)
        return done
