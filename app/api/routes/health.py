"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ServicesDep, _bearer, get_principal
from app.api.schemas import Readiness
from app.core.health import readiness, status_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format",
        },
        403: {"description": "GANFORGE_METRICS_AUTH is on and the key is not an admin's"},
    },
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics: this API process's requests and renders, and the fleet's jobs,
    queue and workers (from the database, so every replica reports the same)."""
    if services.settings.metrics_auth:
        principal = await get_principal(request, services, await _bearer(request))
        if not principal.admin:
            raise HTTPException(403, "/metrics needs an admin key (GANFORGE_METRICS_AUTH)")
    body = await asyncio.to_thread(services.exposition.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "not ready: `checks` says what is missing"}
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Database, broker and store reachable, and a worker alive: 200 (`degraded` when the store
    is nearly full); otherwise 503."""
    checks = await asyncio.to_thread(
        readiness, services.settings, services.store, services.broker_ping, services.local_worker
    )
    status = status_of(checks)
    return JSONResponse(
        {"status": status, "checks": checks}, status_code=503 if status == "not ready" else 200
    )
