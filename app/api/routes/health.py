"""Liveness and readiness."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from app.api.deps import ServicesDep
from app.api.schemas import Readiness
from app.core.db import ping, session_scope, utcnow
from app.core.models import Worker

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _checks(services) -> dict[str, str]:
    settings = services.settings
    checks: dict[str, str] = {}
    url = settings.resolved_database_url
    try:
        ping(url)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        services.store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {exc}"
    try:
        with services.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    if checks["database"] == "ok":
        since = utcnow() - timedelta(seconds=settings.worker_seen_seconds)
        with session_scope(url) as s:
            seen = s.scalar(select(func.count()).select_from(Worker).where(Worker.last_seen >= since))
        checks["workers"] = "ok" if seen else "error: no worker heartbeat seen recently"
    else:
        checks["workers"] = "unknown"
    return checks


@router.get("/readyz", response_model=Readiness, responses={
    503: {"model": Readiness, "description": "not ready: `checks` says what is missing"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Database, broker and store reachable, and a worker alive: 200; otherwise 503."""
    checks = await run_in_threadpool(_checks, services)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)
