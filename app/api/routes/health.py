"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep
from app.api.schemas import Readiness
from app.core.health import readiness, status_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


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
