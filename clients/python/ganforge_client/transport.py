"""The Client's plumbing: one httpx.Client, a request that raises ApiError for an error
answer, a streamed GET, and the small helpers every group of methods shares."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import quote

import httpx

from ganforge_client.errors import ConnectionFailed, error_from_response
from ganforge_client.models import Png

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_BYTES = 256 * 1024


def seg(value: str) -> str:
    """One path segment: ids are quoted, and an empty one is refused (it would change the URL)."""
    if not value:
        raise ValueError("an id must not be empty")
    return quote(str(value), safe="")


def params(**values: Any) -> dict[str, Any]:
    """Query parameters the caller set (the API refuses unknown or null ones with 422)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


def png_of(response: httpx.Response) -> Png:
    png = Png(response.content)
    png.media_type = response.headers.get("content-type", "image/png").split(";")[0]
    png.etag = response.headers.get("etag")
    png.checkpoint_id = response.headers.get("x-checkpoint-id")
    step = response.headers.get("x-checkpoint-step")
    png.step = int(step) if step and step.isdigit() else None
    return png


class Transport:
    """The connection and its settings; ganforge_client.Client adds the API's methods."""

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
        return f"{type(self).__name__}({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
