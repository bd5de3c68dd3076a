"""Readiness: is the database reachable, the store writable, the broker up, a worker alive?"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from app.core.db import ping, session_scope, utcnow
from app.core.models import Worker
from app.core.settings import Settings
from app.core.store import ArtifactStore


def workers_seen(settings: Settings) -> int:
    """Worker processes whose heartbeat is at most ``worker_seen_seconds`` old."""
    since = utcnow() - timedelta(seconds=settings.worker_seen_seconds)
    with session_scope(settings.resolved_database_url) as s:
        return int(s.scalar(select(func.count()).select_from(Worker).where(Worker.last_seen >= since))
                   or 0)


def readiness(settings: Settings, store: ArtifactStore, broker_ping: Callable[[], None]) -> dict[str, str]:
    """Each dependency's state: 'ok' or why not. Blocking: call it off the event loop."""
    checks: dict[str, str] = {}
    try:
        ping(settings.resolved_database_url)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {exc}"
    try:
        broker_ping()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    if checks["database"] == "ok":
        seen = workers_seen(settings)
        checks["workers"] = "ok" if seen else "error: no worker heartbeat seen recently"
    else:
        checks["workers"] = "unknown"
    return checks
