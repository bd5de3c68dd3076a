"""API tests: a real app on a temp SQLite database and store, jobs run in-process."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.settings import Settings
from tests.tiny import tiny

TINY = tiny()


@pytest.fixture
def settings(tmp_path) -> Settings:
    # More concurrent jobs than the default 4: list/pagination tests queue several. Scoring
    # off (a feature extractor per test's store would cost seconds each); the scoring tests
    # turn it on.
    return Settings(
        data_dir=tmp_path, progress_interval=0.05, max_jobs_per_owner=20, score_samples=0
    )


def make_key(settings: Settings, name: str, admin: bool = False) -> str:
    """Create an API key through the core function the CLI uses."""
    from app.core.access import auth
    from app.core.db import migrate, session_scope

    migrate(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as s:
        return auth.create_key(s, name=name, admin=admin)[1]


def create_job(client, **config) -> str:
    """POST /v1/jobs with TINY and ``config`` over it; the new job's id."""
    r = client.post("/v1/jobs", json={"name": "test", "config": {**TINY, **config}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def cancel_midway(client, run_job, **config) -> tuple[str, dict]:
    """A job (TINY and ``config``) canceled while running, after its first checkpoint: (id, its
    latest checkpoint, the one the stop wrote)."""
    job_id = create_job(client, steps=100_000, **config)
    runner = threading.Thread(target=run_job, args=(job_id,))
    runner.start()
    deadline = time.monotonic() + 60
    while not client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    runner.join(60)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled", job
    (latest, *_) = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert latest["step"] == job["progress"]["step"] > TINY["checkpoint_every"]  # the stop's own
    return job_id, latest


@pytest.fixture
def client(settings):
    """A client acting as an ordinary owner, 'alice'."""
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


@pytest.fixture
def run_job(settings):
    """Run a queued job to its end in this process, as a worker would."""
    from worker.runner import run_job as _run

    return lambda job_id: _run(job_id, settings=settings)


@pytest.fixture
def trained_job(client, run_job):
    """A finished tiny job: (job id, its JSON)."""
    r = client.post("/v1/jobs", json={"name": "tiny", "config": TINY})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert run_job(job_id) == "succeeded"
    return job_id, client.get(f"/v1/jobs/{job_id}").json()
