"""Readiness: is the database reachable, the store writable, the broker up, a worker alive?

And the store gate: new work (a job, a resume, an upload) is refused with 503 while the store
cannot be written, from a probe made at most once every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from app.core.artifacts.store import ArtifactStore
from app.core.db import ping, session_scope, utcnow
from app.core.errors import Unavailable
from app.core.models import Worker
from app.core.settings import Settings

log = logging.getLogger("ganforge.health")
STORE_CHECK_SECONDS = 3.0  # how long one probe of the store answers for


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


class StoreGate:
    """Whether new work may be accepted: the store could be written at its last probe.

    Jobs accepted while the store is down fail at their first checkpoint, and uploads fail
    half-way; refusing them at once (503 + Retry-After) says so while the client can still
    wait. The probe (a small write, as /readyz makes) runs at most once every ``ttl`` seconds
    per process; while one runs, other requests use the last answer rather than queue behind
    a slow store. Thread-safe; blocking: call ``require`` off the event loop.
    """

    def __init__(self, store: ArtifactStore, name: str, ttl: float = STORE_CHECK_SECONDS):
        self.store, self.name, self.ttl = store, name, ttl
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._error: str | None = None

    def _probe(self) -> None:
        try:
            self.store.ping()
            error = None
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        if error and error != self._error:
            log.warning("refusing new work: the artifact store cannot be written: %s", error)
        elif self._error and not error:
            log.warning("the artifact store can be written again; accepting new work")
        self._error, self._checked_at = error, time.monotonic()

    def _stale(self) -> bool:
        checked = self._checked_at
        return checked is None or time.monotonic() - checked >= self.ttl

    def require(self) -> None:
        """Return if the store is writable; raise Unavailable (503) naming it if not."""
        # The first caller probes; the others use the last answer meanwhile (they wait only
        # when there is no answer yet).
        if self._stale() and self._lock.acquire(blocking=self._checked_at is None):
            try:
                if self._stale():
                    self._probe()
            finally:
                self._lock.release()
        if self._error is not None:
            raise Unavailable(
                f"the artifact store ({self.name}) cannot be written, so new jobs, resumes and "
                "uploads are refused until it can; jobs already accepted are kept. Try again "
                "later (GET /readyz shows the store's state)"
            )
