"""Client: ganforge's HTTP API from Python, on httpx (sync)."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import httpx

from app.client.errors import ConnectionFailed, NotFound, error_from_response
from app.client.events import EventStream
from app.client.models import (
    Checkpoint,
    Dataset,
    Job,
    JobsPage,
    Metrics,
    Png,
)

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_BYTES = 256 * 1024
Ema = bool | Literal["auto", "true", "false"]
Progress = Callable[[int, int], object]


def _seg(value: str) -> str:
    """One path segment: ids are quoted, and an empty one is refused (it would change the URL)."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(str(value), safe="")


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters the caller set (the API refuses unknown or null ones with 422)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def _png(response: httpx.Response) -> Png:
    png = Png(response.content)
    png.media_type = response.headers.get("content-type", "image/png").split(";")[0]
    png.etag = response.headers.get("etag")
    png.checkpoint_id = response.headers.get("x-checkpoint-id")
    step = response.headers.get("x-checkpoint-step")
    png.step = int(step) if step and step.isdigit() else None
    return png


def _form_quote(value: str) -> str:
    # What browsers do for a multipart filename: the characters that would end the header.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Client:
    """ganforge's API: ``Client(url, key)``, or GANFORGE_URL / GANFORGE_KEY from the environment.

    Methods return the models in app.client.models and raise app.client.errors: ApiError
    (a subclass per status) for an error answer, ConnectionFailed when the server cannot be
    reached. Use it as a context manager, or call close().
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = (url or os.environ.get("GANFORGE_URL") or DEFAULT_URL).rstrip("/")
        key = key if key is not None else os.environ.get("GANFORGE_KEY")
        headers = {"User-Agent": "ganforge-client"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:  # never the key
        return f"Client({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: Any = None,
    ) -> httpx.Response:
        """One request to ``path`` (``/v1/...``); an error answer raises ApiError."""
        try:
            response = self._http.request(
                method, path, params=params, json=json, headers=headers, content=content
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.url, exc) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    @contextmanager
    def _stream(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Iterator[httpx.Response]:
        """An open GET response whose body is read as it arrives; a broken connection (before
        or while reading) raises ConnectionFailed."""
        try:
            with self._http.stream(
                "GET",
                path,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else self._http.timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.url, exc) from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- datasets ---------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Dataset:
        """Upload a zip of images or an .npz, streamed from disk; ``progress(sent, total)``
        is called with the file's bytes sent so far."""
        path = Path(path)
        size = path.stat().st_size
        boundary = secrets.token_hex(16)
        head = b""
        if name is not None:
            head += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'.encode()
                + name.encode()
                + b"\r\n"
            )
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_form_quote(path.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            sent = 0
            if progress is not None:
                progress(0, size)
            with path.open("rb") as f:
                while sent < size:
                    chunk = f.read(min(CHUNK_BYTES, size - sent))
                    if not chunk:
                        raise OSError(f"{path} shrank while it was being uploaded")
                    yield chunk  # resumed once httpx has written it
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, size)
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            # explicit, so httpx sends the generator with a length instead of chunked
            "Content-Length": str(len(head) + size + len(tail)),
        }
        return Dataset.model_validate(
            self._json("POST", "/v1/datasets", content=body(), headers=headers)
        )

    def list_datasets(self) -> list[Dataset]:
        """Uploads (newest first), then the built-ins, each saying whether it is available."""
        items = self._json("GET", "/v1/datasets")["items"]
        return [Dataset.model_validate(d) for d in items]

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._json("GET", f"/v1/datasets/{_seg(dataset_id)}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{_seg(dataset_id)}")

    # -- jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        config: Mapping[str, Any],
        *,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a training job (``config``: TrainConfig fields); a repeated idempotency key
        returns the job it first made."""
        body: dict[str, Any] = {"config": dict(config)}
        if name is not None:
            body["name"] = name
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return Job.model_validate(self._json("POST", "/v1/jobs", json=body, headers=headers))

    def jobs_page(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> JobsPage:
        """One page of jobs, newest first; pass its ``next_cursor`` as ``cursor`` for the next."""
        params = _params(status=status, limit=limit, cursor=cursor)
        return JobsPage.model_validate(self._json("GET", "/v1/jobs", params=params))

    def list_jobs(self, *, status: str | None = None, limit: int = 20) -> Iterator[Job]:
        """Every job, newest first, fetched ``limit`` per request as the iterator goes."""
        cursor = None
        while True:
            page = self.jobs_page(status=status, limit=limit, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self._json("GET", f"/v1/jobs/{_seg(job_id)}"))

    def cancel_job(self, job_id: str) -> Job:
        """Ask a job to stop (a running one stops at its next check and keeps a checkpoint)."""
        return Job.model_validate(self._json("POST", f"/v1/jobs/{_seg(job_id)}/cancel"))

    def resume_job(self, job_id: str, steps: int | None = None) -> Job:
        """Continue a failed or canceled job from its last checkpoint, optionally to ``steps``."""
        body = {"steps": steps} if steps is not None else None
        return Job.model_validate(self._json("POST", f"/v1/jobs/{_seg(job_id)}/resume", json=body))

    def delete_job(self, job_id: str) -> None:
        """Delete a job that is not running, with its checkpoints."""
        self.request("DELETE", f"/v1/jobs/{_seg(job_id)}")

    def events(
        self,
        job_id: str,
        *,
        last_event_id: int | None = None,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> EventStream:
        """The job's server-sent events, reconnecting with Last-Event-ID when the connection
        drops; ends after the final ``job`` event or on ``deleted``."""
        return self._events(job_id, last_event_id=last_event_id, retries=retries, backoff=backoff)

    def _events(self, job_id: str, *, deadline: float | None = None, **kwargs: Any) -> EventStream:
        path = f"/v1/jobs/{_seg(job_id)}/events"

        def open_stream(
            last: int | None, remaining: float | None
        ) -> AbstractContextManager[httpx.Response]:
            read = self.timeout if remaining is None else min(self.timeout, remaining)
            timeout = httpx.Timeout(self.timeout, read=read)
            headers = {"Last-Event-ID": str(last)} if last is not None else None
            return self._stream(path, headers=headers, timeout=timeout)

        return EventStream(
            open_stream,
            lambda: self.get_job(job_id),
            job_id=job_id,
            url=self.url,
            deadline=deadline,
            **kwargs,
        )

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        progress: Callable[[Job], object] | None = None,
    ) -> Job:
        """Block until the job is finished and return it; ``progress(job)`` on every change.

        Follows the job's event stream (which reconnects by itself); if that cannot be kept
        open, polls every ``poll`` seconds instead. TimeoutError after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Job | None = None

        def seen(job: Job) -> None:
            nonlocal last
            if progress is not None and (last is None or job != last):
                progress(job)
            last = job

        try:
            with self._events(job_id, deadline=deadline) as stream:
                for event in stream:
                    if event.event == "deleted":
                        raise NotFound(404, "Not found", f"job {job_id} was deleted")
                    job = event.job
                    if job is not None:
                        seen(job)
                        if job.finished:
                            return job
        except ConnectionFailed:
            pass  # the stream would not stay open (a proxy that buffers it?): poll instead
        while True:
            job = self.get_job(job_id)
            seen(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"job {job_id} did not finish in time")
            time.sleep(poll)

    # -- checkpoints and pictures -----------------------------------------------------------

    def _ckpt(self, job_id: str, ref: str) -> str:
        return f"/v1/jobs/{_seg(job_id)}/checkpoints/{_seg(ref)}"

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """The job's stored checkpoints, newest first, with their scores."""
        items = self._json("GET", f"/v1/jobs/{_seg(job_id)}/checkpoints")["items"]
        return [Checkpoint.model_validate(c) for c in items]

    def get_checkpoint(self, job_id: str, ref: str = "latest") -> Checkpoint:
        """One checkpoint: ``ref`` is its id, "latest" or "best"."""
        return Checkpoint.model_validate(self._json("GET", self._ckpt(job_id, ref)))

    def download_checkpoint(self, job_id: str, ref: str, path: str | os.PathLike[str]) -> Path:
        """Save the checkpoint's zip (safetensors + meta.json) to ``path`` (a file, or a folder
        to put the server's file name in), streamed; returns the file written."""
        target = Path(path)
        with self._stream(f"{self._ckpt(job_id, ref)}/download") as response:
            if target.is_dir():
                match = re.search(
                    r'filename="([^"/\\]+)"', response.headers.get("content-disposition", "")
                )
                target = target / (match.group(1) if match else f"{job_id}-{ref}.zip")
            part = target.with_name(f".{target.name}.part")
            try:
                with part.open("wb") as f:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        f.write(chunk)
                part.replace(target)  # a whole file or none
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        return target

    def _picture(self, path: str, params: dict[str, Any], image: bool) -> Png | Image:
        png = _png(self.request("GET", path, params=params))
        return png.image() if image else png

    @overload
    def samples(
        self,
        job_id: str,
        ref: str = ...,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        truncation: float | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def samples(
        self,
        job_id: str,
        ref: str = ...,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        truncation: float | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def samples(
        self,
        job_id: str,
        ref: str = "latest",
        *,
        n: int | None = 64,
        seed: int | None = 0,
        nrow: int | None = 8,
        label: int | None = None,
        ema: Ema | None = "auto",
        truncation: float | None = None,
        image: bool = False,
    ) -> Png | Image:
        """A PNG grid of ``n`` samples (the same arguments always give the same bytes); with
        ``image=True`` a PIL image. ``ema``: "auto" (the better-scored generator), True, False."""
        params = _params(n=n, seed=seed, nrow=nrow, label=label, ema=ema, truncation=truncation)
        return self._picture(f"{self._ckpt(job_id, ref)}/samples.png", params, image)

    @overload
    def interpolation(
        self,
        job_id: str,
        ref: str = ...,
        *,
        from_seed: int,
        to_seed: int,
        steps: int,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def interpolation(
        self,
        job_id: str,
        ref: str = ...,
        *,
        from_seed: int,
        to_seed: int,
        steps: int,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def interpolation(
        self,
        job_id: str,
        ref: str = "latest",
        *,
        from_seed: int,
        to_seed: int,
        steps: int,
        nrow: int | None = None,
        label: int | None = None,
        ema: Ema | None = None,
        image: bool = False,
    ) -> Png | Image:
        """A latent walk of ``steps`` images from one seed's image to another's."""
        params = _params(
            from_seed=from_seed, to_seed=to_seed, steps=steps, nrow=nrow, label=label, ema=ema
        )
        return self._picture(f"{self._ckpt(job_id, ref)}/interpolation.png", params, image)

    def metrics(self, job_id: str) -> Metrics:
        """The run's loss history (bounded, oldest first) and every checkpoint's scores."""
        return Metrics.model_validate(self._json("GET", f"/v1/jobs/{_seg(job_id)}/metrics"))

    def metrics_csv(self, job_id: str) -> str:
        """The same as CSV: a row per loss bucket and per checkpoint."""
        path = f"/v1/jobs/{_seg(job_id)}/metrics"
        return self.request("GET", path, headers={"Accept": "text/csv"}).text

    @overload
    def losses_png(
        self,
        job_id: str,
        *,
        width: int | None = ...,
        height: int | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def losses_png(
        self,
        job_id: str,
        *,
        width: int | None = ...,
        height: int | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def losses_png(
        self,
        job_id: str,
        *,
        width: int | None = None,
        height: int | None = None,
        image: bool = False,
    ) -> Png | Image:
        """D and G losses over the steps, with each checkpoint's FD."""
        params = _params(width=width, height=height)
        return self._picture(f"/v1/jobs/{_seg(job_id)}/losses.png", params, image)

    @overload
    def timeline_png(
        self,
        job_id: str,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        rows: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def timeline_png(
        self,
        job_id: str,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        rows: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def timeline_png(
        self,
        job_id: str,
        *,
        n: int | None = None,
        seed: int | None = None,
        rows: int | None = None,
        ema: Ema | None = None,
        image: bool = False,
    ) -> Png | Image:
        """The same seeds at every stored checkpoint, a row per checkpoint."""
        params = _params(n=n, seed=seed, rows=rows, ema=ema)
        return self._picture(f"/v1/jobs/{_seg(job_id)}/timeline.png", params, image)

    def timeline_gif(
        self,
        job_id: str,
        *,
        n: int | None = None,
        seed: int | None = None,
        rows: int | None = None,
        ema: Ema | None = None,
        frame_ms: int | None = None,
    ) -> Png:
        """The timeline as an animated GIF, a frame per checkpoint (``media_type`` image/gif)."""
        params = _params(n=n, seed=seed, rows=rows, ema=ema, frame_ms=frame_ms)
        return _png(self.request("GET", f"/v1/jobs/{_seg(job_id)}/timeline.gif", params=params))
