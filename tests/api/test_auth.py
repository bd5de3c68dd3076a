"""API keys, ownership (another owner's ids are 404), admin scope and per-owner limits."""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.api.main import create_app
from app.core.access import auth
from app.core.db import migrate, session_scope
from app.core.models import ApiKey
from app.core.settings import Settings
from tests.api.conftest import TINY, make_key


def _client(settings, key: str | None) -> TestClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return TestClient(create_app(settings), headers=headers)


def test_missing_or_wrong_key_is_401_with_www_authenticate(settings, trained_job):
    job_id, _ = trained_job
    good = make_key(settings, "carol")
    revoked = make_key(settings, "carol")
    with session_scope(settings.resolved_database_url) as s:
        auth.revoke_key(s, key_id="key_" + revoked.split("_")[2])
    urls = [
        "/v1/jobs",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/checkpoints",
        f"/v1/jobs/{job_id}/checkpoints/latest/samples.png",
        "/v1/datasets",
    ]
    for key in (None, "nonsense", good[:-1] + ("A" if good[-1] != "A" else "B"), revoked):
        with _client(settings, key) as c:
            for url in urls:
                r = c.get(url)
                assert r.status_code == 401, (key, url, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.headers["content-type"].startswith("application/problem+json")
            assert c.post("/v1/jobs", json={"config": TINY}).status_code == 401
            assert c.get("/healthz").status_code == 200  # probes need no key


def test_only_a_hash_of_the_key_is_stored(settings):
    key = make_key(settings, "dave")
    secret = key.split("_", 3)[3]
    with session_scope(settings.resolved_database_url) as s:
        rows = s.scalars(select(ApiKey)).all()
    stored = " ".join(f"{r.id} {r.secret_sha256}" for r in rows)
    assert secret not in stored and len(rows[0].secret_sha256) == 64


def test_other_owners_ids_are_404_everywhere(settings, client, trained_job):
    job_id, _ = trained_job  # alice's
    ckpt = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"][0]["id"]
    x = np.zeros((8, 16, 16), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    ds = client.post("/v1/datasets", files={"file": ("x.npz", buf.getvalue())}).json()["id"]
    bob = make_key(settings, "bob")
    with _client(settings, bob) as c:
        for method, url in [
            ("get", f"/v1/jobs/{job_id}"),
            ("post", f"/v1/jobs/{job_id}/cancel"),
            ("post", f"/v1/jobs/{job_id}/resume"),
            ("delete", f"/v1/jobs/{job_id}"),
            ("get", f"/v1/jobs/{job_id}/events"),
            ("get", f"/v1/jobs/{job_id}/checkpoints"),
            ("get", f"/v1/jobs/{job_id}/checkpoints/{ckpt}"),
            ("get", f"/v1/jobs/{job_id}/checkpoints/{ckpt}/download"),
            ("get", f"/v1/jobs/{job_id}/checkpoints/latest/samples.png"),
            ("get", f"/v1/jobs/{job_id}/checkpoints/{ckpt}/interpolation.png"),
            ("get", f"/v1/datasets/{ds}"),
            ("delete", f"/v1/datasets/{ds}"),
        ]:
            r = getattr(c, method)(url)
            nobody = getattr(c, method)(
                url.replace(job_id, "job_0000000000000000").replace(ds, "ds_0000")
            )
            assert r.status_code == 404, (method, url, r.text)
            assert r.json()["title"] == nobody.json()["title"]  # same answer as a missing id
        assert c.get("/v1/jobs").json()["items"] == []
        assert c.get("/v1/jobs?status=succeeded").json()["items"] == []
        assert all(d["builtin"] for d in c.get("/v1/datasets").json()["items"])
        r = c.post("/v1/jobs", json={"config": {**TINY, "dataset": ds}})
        assert r.status_code == 422 and r.json()["field"] == "config.dataset"
    # alice still has everything
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get(f"/v1/datasets/{ds}").status_code == 200


def test_admin_sees_all_owners(settings, client, trained_job):
    job_id, _ = trained_job
    admin = make_key(settings, "root", admin=True)
    with _client(settings, admin) as c:
        assert [j["id"] for j in c.get("/v1/jobs").json()["items"]] == [job_id]
        assert c.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4").status_code == 200


def test_keys_cli_creates_a_working_key(tmp_path):
    env = {**os.environ, "GANFORGE_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "erin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip()
    assert key.startswith("gf_key_") and "erin" in out.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "erin" in listed and key.split("_", 3)[3] not in listed
    with _client(Settings(data_dir=tmp_path), key) as c:
        assert c.get("/v1/jobs").status_code == 200
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "no spaces"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "name" in bad.stderr


def test_first_admin_key_is_created_once_and_kept_private(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.resolved_database_url)  # as `ganforge serve` does first
    key, path = auth.first_admin_key(settings)
    again, _ = auth.first_admin_key(settings)
    assert key and key == again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with _client(settings, key) as c:
        assert c.get("/v1/jobs").status_code == 200


def test_auth_off_needs_an_explicit_setting_and_warns(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path, auth=False)
    with caplog.at_level(logging.WARNING), _client(settings, None) as c:
        assert c.get("/v1/jobs").status_code == 200
    assert any("GANFORGE_AUTH=false" in r.message for r in caplog.records)


def test_concurrent_job_limit_is_429_with_retry_after(tmp_path):
    settings = Settings(data_dir=tmp_path, max_jobs_per_owner=2)
    with _client(settings, make_key(settings, "alice")) as c:
        first = [c.post("/v1/jobs", json={"config": TINY}) for _ in range(2)]
        assert all(r.status_code == 202 for r in first)
        r = c.post("/v1/jobs", json={"config": TINY})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        c.post(f"/v1/jobs/{first[0].json()['id']}/cancel")
        assert c.post("/v1/jobs", json={"config": TINY}).status_code == 202
    # another owner has its own allowance
    with _client(settings, make_key(settings, "bob")) as c:
        assert c.post("/v1/jobs", json={"config": TINY}).status_code == 202


def test_steps_per_job_limit_names_the_field(tmp_path):
    settings = Settings(data_dir=tmp_path, max_steps_per_job=100)
    with _client(settings, make_key(settings, "alice")) as c:
        r = c.post("/v1/jobs", json={"config": {**TINY, "steps": 101}})
        assert r.status_code == 422 and r.json()["field"] == "config.steps"
        assert "100" in r.json()["detail"]


def test_storage_quota(tmp_path):
    settings = Settings(data_dir=tmp_path, max_stored_bytes_per_owner=4000)
    x = np.random.default_rng(0).integers(0, 255, (32, 16, 16), dtype=np.uint8)  # ~8 KB
    buf = io.BytesIO()
    np.savez(buf, x=x)
    with _client(settings, make_key(settings, "alice")) as c:
        r = c.post("/v1/datasets", files={"file": ("x.npz", buf.getvalue())})
        assert r.status_code == 413 and "quota" in r.json()["detail"]
        assert not list((settings.resolved_store_dir / "datasets").glob("ds_*"))


@pytest.mark.parametrize("path", ["samples.png?n=1&seed=", "interpolation.png?steps=2&from_seed="])
def test_sampling_is_rate_limited_per_key(settings, trained_job, path):
    job_id, _ = trained_job
    limited = settings.model_copy(update={"sample_rate": 0.5, "sample_burst": 2})
    key = make_key(settings, "alice")
    with _client(limited, key) as c:
        codes = [
            c.get(f"/v1/jobs/{job_id}/checkpoints/latest/{path}{i}").status_code for i in range(3)
        ]
        assert codes[:2] == [200, 200] and codes[2] == 429
        r = c.get(f"/v1/jobs/{job_id}/checkpoints/latest/{path}9")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    with _client(limited, make_key(settings, "alice")) as c:  # a different key, its own bucket
        assert c.get(f"/v1/jobs/{job_id}/checkpoints/latest/{path}10").status_code == 200
