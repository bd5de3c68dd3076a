"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep
from app.api.schemas import Readiness
from app.core.health import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={
    503: {"model": Readiness, "description": "not ready: `checks` says what is missing"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Database, broker and store reachable, and a worker alive: 200; otherwise 503."""
    checks = await asyncio.to_thread(readiness, services.settings, services.store,
                                     services.broker_ping)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)
