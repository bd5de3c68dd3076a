"""Readiness: is the database reachable, the store writable, the broker up, a worker alive?"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from app.core.artifacts.store import ArtifactStore
from app.core.db import ping, session_scope, utcnow
from app.core.models import Worker
from app.core.settings import Settings


def workers_seen(settings: Settings) -> int:
    """Worker processes whose heartbeat is at most ``worker_seen_seconds`` old."""
    since = utcnow() - timedelta(seconds=settings.worker_seen_seconds)
    with session_scope(settings.resolved_database_url) as s:
        return int(
            s.scalar(select(func.count()).select_from(Worker).where(Worker.last_seen >= since)) or 0
        )


def readiness(
    settings: Settings,
    store: ArtifactStore,
    broker_ping: Callable[[], None],
    local_worker: Callable[[], bool] | None = None,
) -> dict[str, str]:
    """Each dependency's state: 'ok' or why not. Blocking: call it off the event loop.

    ``local_worker`` (embedded serve) says whether its own worker process is running: a dead
    one is known at once, not when its last heartbeat grows old.
    """
    checks: dict[str, str] = {}
    try:
        ping(settings.resolved_database_url)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        store.ping()
        free = store.free_bytes()
        checks["store"] = "ok"
        if free < settings.store_min_free_bytes:
            checks["store"] = (
                f"degraded: {free >> 20} MiB free, under GANFORGE_STORE_MIN_FREE_BYTES "
                f"({settings.store_min_free_bytes >> 20} MiB); checkpoints may fail"
            )
    except Exception as exc:
        checks["store"] = f"error: {exc}"
    try:
        broker_ping()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    if local_worker is not None and not local_worker():
        checks["workers"] = "error: the embedded worker process is not running (restarting)"
    elif checks["database"] == "ok":
        seen = workers_seen(settings)
        checks["workers"] = "ok" if seen else "error: no worker heartbeat seen recently"
    else:
        checks["workers"] = "unknown"
    return checks


def status_of(checks: dict[str, str]) -> str:
    """'ready'; 'degraded' when all works but something is running out; else 'not ready'."""
    if all(v == "ok" for v in checks.values()):
        return "ready"
    if all(v == "ok" or v.startswith("degraded") for v in checks.values()):
        return "degraded"
    return "not ready"
