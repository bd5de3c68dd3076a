"""A job that names no precision trains in "auto": the worker resolves it (bf16 where the device
has it natively, else fp32) and the job, its checkpoints and a resume all say which."""

from __future__ import annotations

import json

from app.core.artifacts.selection import get_store
from gan_core.precision import resolve_precision
from gan_core.training import resolve_device
from tests.api.conftest import TINY, cancel_midway, create_job

# what "auto" is on the device a TINY job (device auto) trains on here
HERE = resolve_precision("auto", resolve_device(TINY.get("device", "auto")))


def _metas(settings, job_id: str) -> list[dict]:
    run = get_store(settings.resolved_store_dir, settings.store_url).run_dir(job_id)
    return [json.loads(p.read_text()) for p in sorted(run.glob("checkpoints/*/meta.json"))]


def test_a_job_on_the_default_shows_the_precision_it_trained_in(client, run_job, settings):
    assert "precision" not in TINY  # the default, as a user who never heard of it sends
    job_id = create_job(client)
    assert client.get(f"/v1/jobs/{job_id}").json()["config"]["precision"] == "auto"  # queued
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["config"]["precision"] == HERE
    metas = _metas(settings, job_id)
    assert metas and {m["config"]["precision"] for m in metas} == {HERE}


def test_a_resumed_job_goes_on_in_the_precision_it_trained_in(client, run_job, settings):
    job_id, _ = cancel_midway(client, run_job)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["config"]["precision"] == HERE
    total = job["progress"]["step"] + 4
    assert client.post(f"/v1/jobs/{job_id}/resume", json={"steps": total}).status_code == 202
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"]["step"] == total and job["config"]["precision"] == HERE
    metas = _metas(settings, job_id)
    assert metas[-1]["step"] == total and {m["config"]["precision"] for m in metas} == {HERE}


def test_an_explicit_precision_is_kept_as_asked(client, run_job):
    job_id = create_job(client, precision="fp32")
    assert run_job(job_id) == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}").json()["config"]["precision"] == "fp32"
