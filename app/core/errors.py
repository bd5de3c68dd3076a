"""Domain errors; the API maps each to one HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field


class NotFound(DomainError):
    status, title = 404, "Not found"


class Conflict(DomainError):
    status, title = 409, "Conflict"


class InvalidInput(DomainError):
    status, title = 422, "Invalid input"


class TooLarge(DomainError):
    status, title = 413, "Payload too large"


class UnsupportedMedia(DomainError):
    status, title = 415, "Unsupported media type"


class Unavailable(DomainError):
    status, title = 503, "Service unavailable"


class RequestTimeout(DomainError):
    status, title = 408, "Request timeout"
