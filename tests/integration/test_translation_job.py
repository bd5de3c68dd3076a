"""A translation job on the real fleet: an uploaded zip of pairs, POST /v1/jobs with kind
'paired', the Celery worker trains it on Postgres + Redis, its checkpoints are recorded
unscored, and a noise-only picture of it is a clear 409."""

from __future__ import annotations

import pytest

from tests.api.test_pair_uploads import pairs_zip

pytestmark = pytest.mark.integration


def test_a_paired_job_trains_on_the_worker(stack):
    r = stack.client.post("/v1/datasets", files={"file": ("edges.zip", pairs_zip(n=8))})
    assert r.status_code == 201, r.text
    dataset = r.json()["id"]
    config = {
        "kind": "paired",
        "dataset": dataset,
        "image_size": 32,
        "g_width": 8,
        "d_width": 8,
        "batch_size": 2,
        "steps": 50,
        "checkpoint_every": 25,
    }
    r = stack.client.post("/v1/jobs", json={"name": "edges2photos", "config": config})
    assert r.status_code == 202, r.text
    job = stack.wait_status(r.json()["id"], {"succeeded", "failed", "canceled"})
    assert job["status"] == "succeeded", f"{job}\n{stack.logs()}"
    assert job["config"]["kind"] == "paired" and job["progress"]["step"] == 50
    assert (job["config"]["channels_a"], job["config"]["channels_b"]) == (1, 3)
    items = stack.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert [(c["step"], c["score_status"]) for c in items] == [(50, "off"), (25, "off")]
    r = stack.client.get(f"/v1/jobs/{job['id']}/checkpoints/latest/samples.png")
    assert r.status_code == 409 and "/translate" in r.json()["detail"], r.text
