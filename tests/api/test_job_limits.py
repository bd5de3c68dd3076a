"""What a job may ask for before it is queued: checkpoints per job, a batch its dataset can
fill, and training a succeeded job longer -- refused at submit and at resume with a 422 (or
409) naming the field, never left to fail on the worker."""

from __future__ import annotations

import pytest

from app.core.settings import Settings
from tests.api.conftest import TINY, create_job
from tests.api.upload_helpers import labelled_zip, upload
from tests.tiny import tiny

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(tmp_path) -> Settings:
    # The service's own defaults for the checkpoint rule (the suite lowers them elsewhere).
    return Settings(
        data_dir=tmp_path,
        progress_interval=0.05,
        score_samples=0,
        min_checkpoint_every=25,
        max_checkpoints_per_job=200,
    )


def _refused(r, field: str) -> dict:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["field"] == field
    return r.json()


def test_checkpoint_every_under_the_floor_is_refused(client):
    r = client.post("/v1/jobs", json={"config": tiny(steps=40, checkpoint_every=1)})
    detail = _refused(r, "config.checkpoint_every")["detail"]
    assert "checkpoint_every must be >= 25" in detail and "got 1" in detail
    assert "GANFORGE_MIN_CHECKPOINT_EVERY" in detail
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


def test_checkpoints_per_job_are_capped(client):
    r = client.post("/v1/jobs", json={"config": tiny(steps=1_000_000, checkpoint_every=25)})
    detail = _refused(r, "config.checkpoint_every")["detail"]
    assert "make 40000 checkpoints; at most 200 per job" in detail
    assert "GANFORGE_MAX_CHECKPOINTS_PER_JOB" in detail
    assert "checkpoint_every >= 5000 or steps <= 5000" in detail
    # exactly at the cap (ceil(5000 / 25) = 200) and a final partial one (ceil(4990/25)) pass
    for steps in (5000, 4990):
        create_job(client, steps=steps, checkpoint_every=25)
    r = client.post("/v1/jobs", json={"config": tiny(steps=5001, checkpoint_every=25)})
    assert "make 201 checkpoints" in _refused(r, "config.checkpoint_every")["detail"]


def test_resume_to_more_steps_is_held_to_the_cap(client, run_job):
    job_id = create_job(client, steps=25, checkpoint_every=25)
    assert run_job(job_id) == "succeeded"
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 5001})
    assert "make 201 checkpoints" in _refused(r, "config.checkpoint_every")["detail"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["total_steps"] == 25  # untouched


def test_a_job_from_under_a_lower_floor_still_resumes(client, settings, run_job, tmp_path):
    """The floor is for new jobs: one accepted when the floor was lower can be resumed."""
    from fastapi.testclient import TestClient

    from app.api.main import create_app

    lower = settings.model_copy(update={"min_checkpoint_every": 1})
    with TestClient(create_app(lower), headers=dict(client.headers)) as before:
        job_id = create_job(before, steps=24, checkpoint_every=12)
    assert run_job(job_id) == "succeeded"
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 36})
    assert r.status_code == 202, r.text


def test_a_batch_larger_than_the_uploaded_dataset_is_refused(client, settings, run_job):
    ds = upload(client, labelled_zip(per_class=5)).json()  # 10 images
    assert ds["num_images"] == 10
    config = tiny(dataset=ds["id"], batch_size=16, steps=25, checkpoint_every=25)
    r = client.post("/v1/jobs", json={"config": config})
    detail = _refused(r, "config.batch_size")["detail"]
    assert f"batch_size 16 is larger than dataset {ds['id']}, which has 10 images" in detail
    assert "batch_size <= 10" in detail
    # the largest batch it can fill trains
    job_id = create_job(client, **{**config, "batch_size": 10})
    assert run_job(job_id) == "succeeded"

    # A job accepted before this check (as an older server did) fails on the worker; its
    # resume is refused at once rather than failing again.
    from app.core.db import session_scope
    from app.core.jobs.records import create_job as record_job
    from app.core.models import Dataset, Job, JobStatus
    from gan_core.config import TrainConfig

    with session_scope(settings.resolved_database_url) as s:
        row, owner = s.get(Dataset, ds["id"]), s.get(Job, job_id).owner_id
        job, _ = record_job(
            s, name="old", config=TrainConfig(**config), owner_id=owner, dataset=row
        )
        job.status, job.error = JobStatus.failed, "batch_size: 16 must be between 1 and ..."
        s.commit()
        old_id = job.id
    r = client.post(f"/v1/jobs/{old_id}/resume")
    assert "which has 10 images" in _refused(r, "config.batch_size")["detail"]
    with session_scope(settings.resolved_database_url) as s:
        assert s.get(Job, old_id).status == JobStatus.failed


def test_a_succeeded_job_trains_longer_from_its_last_checkpoint(client, run_job):
    config = {**TINY, "steps": 25, "checkpoint_every": 25}
    job_id = create_job(client, **config)
    assert run_job(job_id) == "succeeded"
    before = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert [c["step"] for c in before] == [25]

    r = client.post(f"/v1/jobs/{job_id}/resume")  # no steps: there is nothing left to do
    assert r.status_code == 409 and r.json()["field"] == "steps"
    assert "to train it longer, resume it with steps above 25" in r.json()["detail"]
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 25})
    assert "greater than the 25 steps already done" in _refused(r, "steps")["detail"]

    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 60})
    assert r.status_code == 202 and r.json()["status"] == "queued", r.text
    assert r.json()["progress"]["total_steps"] == 60 and r.json()["finished_at"] is None
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["step"] == 60
    after = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert [c["step"] for c in after] == [60, 50, 25]  # newest first: two more
    assert {c["id"]: c for c in after}[before[0]["id"]] == before[0]  # the old one untouched
    # It went on from step 25 (CPU training is deterministic per seed): the weights are those
    # of a run of 60 steps never stopped; one that restarted from 0 would differ.
    straight = create_job(client, **{**config, "steps": 60})
    assert run_job(straight) == "succeeded"
    final = [
        client.get(f"/v1/jobs/{j}/checkpoints/latest").json()["files"] for j in (job_id, straight)
    ]
    assert final[0]["generator.safetensors"] == final[1]["generator.safetensors"]
