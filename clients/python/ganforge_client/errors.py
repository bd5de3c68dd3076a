"""What the client raises: an API's problem+json answer as ApiError, an unreachable server as
ConnectionFailed, a waited-for job that did not succeed as JobFailed (or JobCanceled)."""

from __future__ import annotations

import contextlib
import json
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ganforge_client.models import Job


class ApiError(Exception):
    """An error answer from the API, with its RFC 9457 problem fields."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        type: str = "about:blank",
    ):
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.errors = errors
        self.retry_after = retry_after  # seconds, from Retry-After (429, 503)
        self.type = type


class Unauthorized(ApiError):
    """401: no key, a wrong one, or a revoked one."""


class NotFound(ApiError):
    """404: not there, or not the caller's."""


class Conflict(ApiError):
    """409: the resource is in the wrong state for this (running, already finished, quota full)."""


class Invalid(ApiError):
    """400, 413, 415 or 422: the request or the upload is refused; ``field`` names what."""


class RateLimited(ApiError):
    """429: over a limit; ``retry_after`` says how long to wait."""


class Unavailable(ApiError):
    """502, 503 or 504: the server (or its database or broker) cannot answer now."""


class ConnectionFailed(ConnectionError):
    """The server could not be reached or the connection broke (wraps httpx's TransportError)."""

    def __init__(self, url: str, reason: BaseException | str):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the ganforge server at {url}: {_describe(reason)}")


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: Invalid,
    415: Invalid,
    422: Invalid,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def _describe(reason: BaseException | str) -> str:
    if isinstance(reason, httpx.ConnectError):
        text = str(reason)
        return "connection refused" if "refused" in text.lower() else (text or "cannot connect")
    if isinstance(reason, httpx.TimeoutException):
        return f"timed out ({type(reason).__name__})"
    return str(reason) or type(reason).__name__


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The exception for an error response (its body must have been read)."""
    status = response.status_code
    body: Any = None
    with contextlib.suppress(ValueError):
        body = json.loads(response.content) if response.content else None
    if not isinstance(body, dict):  # not problem+json: a proxy's page, say
        text = response.text.strip()[:300] if response.content else ""
        body = {"title": response.reason_phrase or "Error", "detail": text or f"HTTP {status}"}
    cls = _BY_STATUS.get(status, ApiError)
    detail = body.get("detail")
    if not isinstance(detail, str):  # e.g. FastAPI's default {"detail": [...]}
        detail = json.dumps(detail) if detail is not None else f"HTTP {status}"
    errors = body.get("errors")
    return cls(
        status,
        str(body.get("title") or response.reason_phrase or "Error"),
        detail,
        field=body.get("field") if isinstance(body.get("field"), str) else None,
        errors=errors if isinstance(errors, list) else None,
        retry_after=_retry_after(response.headers.get("Retry-After")),
        type=str(body.get("type") or "about:blank"),
    )


class JobFailed(Exception):
    """wait() on a job that ended without succeeding. ``job`` is its final record: ``status``
    ("failed", or "canceled" for JobCanceled), ``error`` (the server's reason, if any)."""

    def __init__(self, job: Job):
        self.job = job
        self.job_id = job.id
        self.status = job.status
        self.error = job.error
        p = job.progress
        reason = f": {job.error}" if job.error else ""
        super().__init__(f"job {job.id} {job.status} at step {p.step}/{p.total_steps}{reason}")


class JobCanceled(JobFailed):
    """wait() on a job that was canceled (``job.status`` is "canceled")."""
