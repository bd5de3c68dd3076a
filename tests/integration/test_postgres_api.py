"""The API on Postgres: inputs SQLite stores but Postgres refuses, races, and the fuzz again
(with fewer cases per operation than on SQLite).

Postgres refuses text with NUL bytes that SQLite stores happily; each such input must be a 422
naming the field, never a 500 or a reset connection. The app runs in-process (TestClient)
on a fresh Postgres database; jobs run in-process as a worker would run them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.settings import Settings
from tests.api.conftest import TINY, make_key
from tests.api.test_datasets import job_racing_dataset_delete
from tests.api.test_fuzz import api_schema, test_api_conforms_to_its_schema, world  # noqa: F401
from tests.integration.conftest import fresh_database

pytestmark = pytest.mark.integration
NUL = "\x00"
ENC = "%00"  # in a URL path, as a client sends it


@pytest.fixture
def settings(tmp_path):
    with fresh_database("ganforge_api") as url:
        # sample_rate 0: the fuzz (imported above) must see the same responses on every run
        yield Settings(
            data_dir=tmp_path,
            database_url=url,
            progress_interval=0.05,
            max_jobs_per_owner=20,
            sample_rate=0,
        )


@pytest.fixture(autouse=True)
def fewer_fuzz_examples(monkeypatch):
    """The fuzz again, on Postgres, with fewer cases per operation: what differs here is the
    database under each operation, which a few cases reach; tests/api/test_fuzz.py runs the
    full count on SQLite (the two took ~80 s each in a CI run)."""
    import tests.api.test_fuzz as fuzz

    monkeypatch.setattr(fuzz, "MAX_EXAMPLES", 6)


@pytest.fixture
def run_job(settings):
    from worker.runner import run_job as _run

    return lambda job_id: _run(job_id, settings=settings)


@pytest.fixture
def client(settings):
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((8, 16, 16), np.uint8))
    return buf.getvalue()


def test_nul_bytes_anywhere_are_a_422_naming_the_field(client, run_job):
    job_id = client.post("/v1/jobs", json={"config": TINY}).json()["id"]
    assert run_job(job_id) == "succeeded"
    ds = client.post("/v1/datasets", files={"file": ("a.npz", _npz())}).json()["id"]
    bad_job, bad_ds = job_id + ENC, ds + ENC
    probes = [
        ("get", f"/v1/jobs/{bad_job}", {}, "job_id"),
        ("post", f"/v1/jobs/{bad_job}/cancel", {}, "job_id"),
        ("post", f"/v1/jobs/{bad_job}/resume", {}, "job_id"),
        ("delete", f"/v1/jobs/{bad_job}", {}, "job_id"),
        ("get", f"/v1/jobs/{bad_job}/events", {}, "job_id"),
        ("get", f"/v1/jobs/{bad_job}/checkpoints", {}, "job_id"),
        ("get", f"/v1/jobs/{job_id}/checkpoints/latest{ENC}", {}, "ckpt"),
        ("get", f"/v1/jobs/{job_id}/checkpoints/ckpt_1{ENC}/download", {}, "ckpt"),
        ("get", f"/v1/jobs/{job_id}/checkpoints/ckpt_1{ENC}/samples.png", {}, "ckpt"),
        ("get", f"/v1/jobs/{bad_job}/checkpoints/latest/interpolation.png", {}, "job_id"),
        ("get", f"/v1/datasets/{bad_ds}", {}, "dataset_id"),
        ("delete", f"/v1/datasets/{bad_ds}", {}, "dataset_id"),
        ("get", "/v1/jobs", {"params": {"cursor": "abc" + NUL}}, "cursor"),
        ("post", "/v1/jobs", {"json": {"name": "a" + NUL, "config": TINY}}, "name"),
        ("post", "/v1/jobs", {"json": {"config": {**TINY, "dataset": ds + NUL}}}, "config.dataset"),
        ("post", "/v1/jobs", {"json": {"config": {**TINY, "dataset": NUL}}}, "config.dataset"),
        (
            "post",
            "/v1/datasets",
            {"params": {"name": "n" + NUL}, "files": {"file": ("a.npz", _npz())}},
            "name",
        ),
        (
            "post",
            "/v1/datasets",
            {"data": {"name": "n" + NUL}, "files": {"file": ("a.npz", _npz())}},
            "name",
        ),
    ]
    failures = []
    for method, url, kwargs, field in probes:
        r = getattr(client, method)(url, **kwargs)
        ok = (
            r.status_code == 422
            and r.headers["content-type"].startswith("application/problem+json")
            and r.json().get("field") == field
        )
        if not ok:
            failures.append((method, url, r.status_code, r.text[:200]))
    assert not failures, failures
    # and the server is fine afterwards
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200


def test_a_job_racing_the_delete_of_its_dataset_is_a_409(client, settings, monkeypatch):
    job_racing_dataset_delete(client, settings, monkeypatch)


def test_migrations_match_the_models_on_postgres(settings):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.core.db import get_engine, migrate
    from app.core.models import Base

    url = settings.resolved_database_url
    migrate(url)
    with get_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
