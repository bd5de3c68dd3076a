"""Every error as application/problem+json (RFC 9457), naming the field where there is one."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.api.schemas import Problem
from app.core.artifacts.store import StoreError
from app.core.errors import DomainError
from app.core.jobs.limits import retry_after_header
from gan_core.jobconfig import KINDS

log = logging.getLogger("ganforge.api")
PROBLEM = "application/problem+json"

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_WHAT = {
    400: "the body could not be parsed (not UTF-8 JSON)",
    401: "no API key, or an invalid or revoked one",
    408: "the request body was too slow",
    404: "no such resource (or it belongs to another owner)",
    409: "the resource's state does not allow this",
    413: "over a size limit",
    415: "unsupported media type",
    422: "invalid input; `field` names the offending parameter",
    429: "over a rate or concurrency limit; see Retry-After",
    503: "the database, the job queue or the artifact store is not reachable; see Retry-After",
}


def problem_responses(
    *codes: int, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for errors answered as problem+json (see `document_problems`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        what = (described or {}).get(code) or _WHAT.get(code, "error")
        entry: dict[str, Any] = {"model": Problem, "description": what}
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


def document_problems(app: FastAPI) -> None:
    """Declare Problem responses under application/problem+json, the type they are sent as.

    FastAPI puts a response `model` under the route's own media type (application/json); this
    moves every Problem schema to application/problem+json once the schema is generated.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if not isinstance(operation, dict):
                    continue
                for response in operation.get("responses", {}).values():
                    content = response.get("content") or {}
                    plain = content.get("application/json")
                    if plain and plain.get("schema", {}).get("$ref", "").endswith("/Problem"):
                        del content["application/json"]
                        content.setdefault(PROBLEM, {})["schema"] = plain["schema"]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    # ("body", "config", "steps") -> "config.steps"; ("query", "n") -> "n"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _untag(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """A job config's loc without the kind pydantic's union puts in it: ("body", "config",
    "paired", "lambda_l1") -> (("body", "config", "lambda_l1"), "paired"). The field is then
    where the value is in the request body, the same for every kind."""
    for i in range(len(loc) - 1):
        if loc[i] == "config" and loc[i + 1] in KINDS and (i == 0 or loc[i - 1] == "body"):
            return loc[: i + 1] + loc[i + 2 :], str(loc[i + 1])
    return loc, None


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        # A body that is not JSON at all: loc is ("body", <character offset>), not a field.
        loc = ("body",) if err.get("type") == "json_invalid" else tuple(err.get("loc", ()))
        loc, kind = _untag(loc)
        field = _field_of(loc)
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "invalid_kind":  # the job config union's own error, loc config
            field, msg = f"{field}.kind", msg.removeprefix("kind: ")
            given = err.get("input")
            if isinstance(given, dict) and "kind" in given:
                msg = f"{msg}; got {given['kind']!r}"[:300]
        elif err.get("type") == "extra_forbidden" and kind is not None:
            msg = f"{msg}: not a field of a {kind} job"
        # A model-level check names its field as "field: reason"; surface that field.
        if err.get("type") == "value_error" and ": " in msg:
            head, _, rest = msg.removeprefix("Value error, ").partition(": ")
            if head.isidentifier():
                field = f"{field}.{head}" if field not in ("body", head) else head
                msg = rest
        msg = msg.removeprefix("Value error, ")
        ctx = {k: v for k, v in (err.get("ctx") or {}).items() if isinstance(v, int | float | str)}
        entry = {"field": field, "message": msg, **({"limit": ctx} if ctx else {})}
        out.append({**entry, "kind": kind} if kind is not None else entry)
    return out


def install(app: FastAPI) -> None:
    document_problems(app)

    @app.exception_handler(DomainError)
    async def _domain(_req: Request, exc: DomainError) -> JSONResponse:
        retry = getattr(exc, "retry_after", None)
        headers = {"Retry-After": retry_after_header(retry)} if retry is not None else None
        if exc.status == 503:
            headers = {"Retry-After": "5"}
        return problem(exc.status, exc.title, exc.detail, field=exc.field, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return problem(
            422,
            "Invalid request",
            f"{first['field']}: {first['message']}",
            field=first["field"],
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {
            400: "Bad request",
            401: "Unauthorized",
            404: "Not found",
            405: "Method not allowed",
        }.get(exc.status_code, "Error")
        return problem(
            exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(DataError)
    async def _data(_req: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot store (the checks above should have refused it first).
        log.warning("database refused a value: %s", exc)
        return problem(422, "Invalid input", "a value in the request cannot be stored")

    @app.exception_handler(ClientDisconnect)
    async def _gone(req: Request, _exc: ClientDisconnect) -> Response:
        # The client hung up mid-body (e.g. an upload dropped half-way): its business, not a
        # bug. One line, no traceback; what it sent is discarded (the receiver removes its
        # scratch). 499 is what proxies call it; nobody is there to read it but the metrics.
        client = f"{req.client.host}:{req.client.port}" if req.client else "?"
        log.info("client %s disconnected during %s %s", client, req.method, req.url.path)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        # Last resort: a bug. Still problem+json, never a plain-text 500 or a dropped connection.
        log.exception("unexpected error on %s %s", req.method, req.url.path)
        return problem(
            500,
            "Internal server error",
            "an unexpected error; it has been logged (nothing was changed if it was a write)",
        )

    def unavailable(detail: str) -> JSONResponse:
        """A dependency is down: 503 with a retry hint, never a 500."""
        return problem(503, "Service unavailable", detail, headers={"Retry-After": "5"})

    @app.exception_handler(StoreError)
    async def _store_down(_req: Request, exc: StoreError) -> JSONResponse:
        log.warning("artifact store failed: %s", exc)
        return unavailable("the artifact store could not be read or written; try again")

    @app.exception_handler(OperationalError)
    async def _db_down(_req: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return unavailable("the database is not reachable; try again")
