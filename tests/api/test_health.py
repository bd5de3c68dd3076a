"""/healthz and /readyz: what readiness reports when the store is nearly full or unwritable."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.db import session_scope, utcnow
from app.core.models import Worker


def _with_worker(settings) -> None:
    with session_scope(settings.resolved_database_url) as s:
        s.merge(Worker(id="w", hostname="here", last_seen=utcnow()))


def test_a_nearly_full_store_is_reported_degraded(settings):
    full = settings.model_copy(update={"store_min_free_bytes": 1 << 62})  # more than any disk
    with TestClient(create_app(full)) as client:
        _with_worker(full)
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "degraded"
        assert r.json()["checks"]["store"].startswith("degraded:")
        assert "GANFORGE_STORE_MIN_FREE_BYTES" in r.json()["checks"]["store"]


def test_an_unwritable_store_is_not_ready(settings):
    with TestClient(create_app(settings)) as client:
        _with_worker(settings)
        assert client.get("/readyz").json()["status"] == "ready"
        root = settings.resolved_store_dir
        shutil.rmtree(root)
        root.write_bytes(b"not a directory")  # writes into the store now fail
        try:
            r = client.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["store"].startswith("error")
            assert client.get("/healthz").status_code == 200  # the process itself is fine
        finally:
            root.unlink()
            root.mkdir()


def test_embedded_mode_knows_at_once_when_its_worker_is_gone(settings):
    alive = [True]
    with TestClient(create_app(settings, local_worker=lambda: alive[0])) as client:
        _with_worker(settings)  # a heartbeat a few seconds old still looks fine
        assert client.get("/readyz").status_code == 200
        alive[0] = False
        r = client.get("/readyz")
        assert r.status_code == 503 and "embedded worker" in r.json()["checks"]["workers"]
