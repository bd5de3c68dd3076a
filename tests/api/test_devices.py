"""Jobs on several devices through the API: what is refused at submit, why a queued one
waits, the queue its message goes to, and a 2-rank job run to its end by the worker's own
code (real gloo ranks in child processes). The fleet test with real workers, a killed rank
and a SIGTERM is tests/integration/test_devices_fleet.py."""

from __future__ import annotations

import json
import time

import torch

from app.core.db import session_scope, utcnow
from app.core.jobs import runs
from app.core.models import Worker
from app.core.settings import Settings
from gan_core.checkpoint import job_config_from_meta, latest_checkpoint, read_meta
from tests.api.conftest import TINY, cancel_midway, create_job
from tests.api.test_recovery import _Recording, _sweep

TWO = {**TINY, "devices": 2}


def _worker(settings: Settings, name: str, devices: int | None, age_s: float = 0.0) -> None:
    """A worker's heartbeat row, as worker.sweep writes it (devices None: from before
    workers announced them)."""
    from datetime import timedelta

    with session_scope(settings.resolved_database_url) as s:
        seen = utcnow() - timedelta(seconds=age_s)
        s.merge(Worker(id=name, hostname="here", last_seen=seen, devices=devices))


def _messages(settings: Settings) -> list[str]:
    """The queue each message in the embedded broker went to (kombu's filesystem transport
    names a message file <time>_<id>.<queue>.msg)."""
    names = sorted(p.name for p in (settings.broker_dir / "queue").iterdir())
    return [n.split(".", 1)[1].removesuffix(".msg") for n in names]


def test_with_no_worker_alive_a_job_is_queued_saying_so(client, settings):
    job = client.post("/v1/jobs", json={"config": TWO}).json()
    assert job["status"] == "queued"
    assert "no worker is running" in job["queued_reason"]
    assert _messages(settings) == [f"{settings.queue}.devices-2"]  # only 2-device workers
    create_job(client)
    assert _messages(settings)[-1] == settings.queue


def test_the_event_stream_says_why_a_queued_job_waits(client):
    job_id = client.post("/v1/jobs", json={"config": TWO}).json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        data = next(line for line in r.iter_lines() if line.startswith("data: "))
    job = json.loads(data.removeprefix("data: "))
    assert job["status"] == "queued" and "no worker is running" in job["queued_reason"], job


def test_a_job_no_live_worker_could_take_is_refused_naming_devices(client, settings):
    _worker(settings, "w1", 1)
    _worker(settings, "old", None)  # counts as one device
    _worker(settings, "gone", 8, age_s=3600)  # its heartbeat is too old to count
    r = client.post("/v1/jobs", json={"config": TWO})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "config.devices"
    assert "at most 1" in body["detail"] and "GANFORGE_WORKER_DEVICES=2" in body["detail"]
    one = client.get(f"/v1/jobs/{create_job(client)}").json()
    assert one["queued_reason"] is None  # a worker that fits is live: it waits its turn


def test_a_queued_job_says_why_once_its_worker_is_gone(client, settings):
    _worker(settings, "w2", 2)
    job = client.post("/v1/jobs", json={"config": {**TINY, "devices": 2}}).json()
    assert job["queued_reason"] is None
    _worker(settings, "w2", 2, age_s=3600)
    _worker(settings, "w1", 1)
    reason = client.get(f"/v1/jobs/{job['id']}").json()["queued_reason"]
    assert "needs a worker with 2 devices" in reason and "at most 1" in reason
    (listed,) = client.get("/v1/jobs").json()["items"]
    assert listed["queued_reason"] == reason


def test_the_sweep_sends_a_dead_workers_job_back_to_its_devices_queue(client, settings):
    job_id = create_job(client, devices=2)
    with session_scope(settings.resolved_database_url) as s:  # a worker claimed it, then died
        runs.claim_job(s, job_id=job_id, worker_id="dead", lease_seconds=-1)
    done = _sweep(settings, queue := _Recording())
    assert done.requeued == [job_id] and queue.devices == {job_id: 2}


def test_devices_per_owner_are_limited(client, settings):
    settings.max_devices_per_owner = 2
    r = client.post("/v1/jobs", json={"config": {**TINY, "devices": 4}})
    assert r.status_code == 422 and r.json()["field"] == "config.devices", r.text
    assert "GANFORGE_MAX_DEVICES_PER_OWNER" in r.json()["detail"]
    create_job(client, devices=2)
    r = client.post("/v1/jobs", json={"config": TINY})  # 2 held + 1 more
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text
    assert "hold 2 devices" in r.json()["detail"]


def test_a_two_device_job_runs_to_its_end_as_two_ranks(client, settings, run_job):
    """The worker's runner trains it as a group (rank 0 here with the job's hooks, rank 1 a
    child process): progress, checkpoints and samples as any job, and the checkpoint is the
    one a single process loads."""
    job_id = create_job(client, devices=2, steps=8, checkpoint_every=4)
    t0, threads = time.monotonic(), torch.get_num_threads()
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["step"] == 8, job
    assert job["config"]["devices"] == 2 and job["error"] is None
    steps = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]]
    assert steps == [8, 4]
    latest = latest_checkpoint(settings.resolved_store_dir / "jobs" / job_id)
    assert latest is not None and job_config_from_meta(read_meta(latest)).devices == 2
    png = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    print(f"2-rank tiny job: {time.monotonic() - t0:.1f} s")
    assert torch.get_num_threads() == threads  # rank 0 gave its worker's threads back


def test_a_two_device_job_resumes_on_one_device(client, settings, run_job):
    """Canceled after a checkpoint written by two ranks, resumed with devices 1 (say its
    2-device workers are gone): one process continues from that checkpoint to the end."""
    job_id, latest = cancel_midway(client, run_job, devices=2)
    for devices, why in [(3, "does not split evenly over 3 devices"), (65, "less than or equal")]:
        r = client.post(f"/v1/jobs/{job_id}/resume", json={"devices": devices})
        assert r.status_code == 422 and r.json()["field"] == "devices", r.text
        assert why in r.json()["detail"], r.text
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"devices": 1, "steps": latest["step"] + 4})
    assert r.status_code == 202 and r.json()["config"]["devices"] == 1, r.text
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"]["step"] == latest["step"] + 4 and job["config"]["devices"] == 1
    final = latest_checkpoint(settings.resolved_store_dir / "jobs" / job_id)
    assert final is not None and job_config_from_meta(read_meta(final)).devices == 1
