"""Faults, in process: lease races, divergence, crashes and full disks while checkpointing,
Each drives the real path (API routes, run_job, the training loop,
the checkpoint writer); only the fault itself is injected.

A broker that is down and the sweep are in test_recovery.py; the fleet-level faults
(killed workers, Redis and API restarts) in tests/integration/test_faults.py.
"""

from __future__ import annotations

import errno
import io
import multiprocessing
import os
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load as st_load
from sqlalchemy import select, update

from app.core.db import session_scope, utcnow
from app.core.jobs import runs
from app.core.models import Checkpoint, Job
from app.core.settings import Settings
from tests.api.conftest import TINY, create_job
from tests.nan_loss import nan_d_loss_from

# Diverges deterministically on CPU: a critic with no gradient penalty, a large learning
# rate and Adam with beta2 = 0 (each step divides by the latest |grad| alone). With seed 0
# it writes finite checkpoints at steps 10 and 20, then a loss goes NaN at step 24. The tests
# read the step from the error rather than trusting that number.
DIVERGES = {
    **TINY,
    "steps": 200,
    "checkpoint_every": 10,
    "keep_checkpoints": 50,
    "loss": "wgan-gp",
    "gp_weight": 0.0,
    "g_lr": 0.1,
    "d_lr": 0.1,
    "g_betas": [0.99, 0.0],
    "d_betas": [0.99, 0.0],
    "precision": "fp32",  # the steps above are fp32's; "auto" is bf16 on some CPUs
}


@pytest.fixture
def settings(tmp_path) -> Settings:
    # A short lease, so a crashed run's job is claimable again within a test.
    return Settings(
        data_dir=tmp_path,
        progress_interval=0.05,
        max_jobs_per_owner=20,
        lease_seconds=1.0,
        score_samples=0,
    )


def _listed(client, job_id: str) -> list[dict]:
    r = client.get(f"/v1/jobs/{job_id}/checkpoints")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _assert_every_listed_checkpoint_serves(client, job_id: str) -> list[int]:
    """Every checkpoint the API lists has its files, loads, and samples a PNG; returns steps."""
    items = _listed(client, job_id)
    for item in items:
        r = client.get(f"/v1/jobs/{job_id}/checkpoints/{item['id']}/samples.png?n=4")
        assert r.status_code == 200, (item["step"], r.text)
        assert r.headers["content-type"] == "image/png"
        Image.open(io.BytesIO(r.content)).verify()
    if items:
        latest = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4")
        assert latest.status_code == 200, latest.text
        assert int(latest.headers["x-checkpoint-step"]) == items[0]["step"]
    return [item["step"] for item in items]


def _ckpt_root(settings: Settings, job_id: str) -> Path:
    return settings.resolved_store_dir / "jobs" / job_id / "checkpoints"


def _run_when_claimable(run_job, job_id: str, timeout: float = 30) -> str:
    """run_job once the dead run's lease has expired (it answers 'skipped' until then)."""
    deadline = time.monotonic() + timeout
    while True:
        result = run_job(job_id)
        if result != "skipped" or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


# ----------------------------------------------------------------- leases: one runner at a time


def test_a_fresh_lease_refuses_a_second_claimer_and_a_redelivered_message_is_skipped(
    client, settings, run_job
):
    job_id = create_job(client)
    url = settings.resolved_database_url
    with session_scope(url) as s:
        assert runs.claim_job(s, job_id=job_id, worker_id="A", lease_seconds=60) is not None
        assert runs.claim_job(s, job_id=job_id, worker_id="B", lease_seconds=60) is None
    # the same message delivered again (e.g. to another worker) finds the job held: no second run
    assert run_job(job_id) == "skipped"
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.lease_owner, job.attempts) == ("running", "A", 1)
        # A renews; the lease stays A's
        assert runs.renew_lease(s, job_id=job_id, worker_id="A", lease_seconds=60) is False
        # A goes silent: its lease runs out, and only then can B take the job
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        s.commit()
        assert runs.claim_job(s, job_id=job_id, worker_id="B", lease_seconds=60) is not None
        assert runs.claim_job(s, job_id=job_id, worker_id="C", lease_seconds=60) is None
        # A, if it was only slow, learns it lost the job and can record nothing
        assert runs.renew_lease(s, job_id=job_id, worker_id="A", lease_seconds=60) is None
        assert runs.finish_job(s, job_id=job_id, worker_id="A", status="succeeded") is False
        job = s.get(Job, job_id, populate_existing=True)
        assert (job.status, job.lease_owner, job.attempts) == ("running", "B", 2)


def test_a_run_that_lost_its_lease_stops_and_writes_nothing(client, settings, run_job):
    """A worker stalls past its lease (GC pause, partition) and another claims the job: when the
    first notices, it must stop without a checkpoint, a record or an end -- the job is not its."""
    job_id = create_job(client, steps=1_000_000, checkpoint_every=100_000)  # no periodic checkpoint
    url = settings.resolved_database_url
    out: list[str] = []
    runner = threading.Thread(target=lambda: out.append(run_job(job_id)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < 3:
        assert time.monotonic() < deadline and runner.is_alive(), "training never started"
        time.sleep(0.05)
    with session_scope(url) as s:  # the lease ran out and worker B claimed the job
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        s.commit()
        assert runs.claim_job(s, job_id=job_id, worker_id="B", lease_seconds=600) is not None
    runner.join(30)
    assert not runner.is_alive(), "the run that lost its lease kept training"
    assert out == ["lost"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "running" and job["error"] is None  # B's, untouched
    assert _listed(client, job_id) == []
    root = _ckpt_root(settings, job_id)
    assert not root.exists() or list(root.iterdir()) == [], "the stale run wrote a checkpoint"


def test_a_checkpoint_is_recorded_only_by_the_lease_holder(client, settings):
    job_id = create_job(client)
    with session_scope(settings.resolved_database_url) as s:
        runs.claim_job(s, job_id=job_id, worker_id="B", lease_seconds=60)
        kwargs = dict(
            job_id=job_id,
            step=12,
            key=f"jobs/{job_id}/checkpoints/step-00000012",
            size_bytes=1,
            files={},
            losses=None,
        )
        assert runs.record_checkpoint(s, worker_id="A", **kwargs) is None
        assert s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all() == []
        assert runs.record_checkpoint(s, worker_id="B", **kwargs) is not None


# ----------------------------------------------------------------- divergence


def test_a_diverging_run_fails_naming_the_step_and_its_last_good_checkpoint_serves(client, run_job):
    r = client.post("/v1/jobs", json={"name": "diverges", "config": DIVERGES})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert run_job(job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"].startswith("training diverged at step "), job["error"]
    bad_step = int(job["error"].removeprefix("training diverged at step ").split(":")[0])
    assert bad_step < DIVERGES["steps"]
    steps = _assert_every_listed_checkpoint_serves(client, job_id)
    assert steps, (
        "no checkpoint was written before the divergence; pick a config that diverges later"
    )
    assert all(step < bad_step for step in steps)
    for item in _listed(client, job_id):
        assert all(v == v and abs(v) != float("inf") for v in item["losses"].values()), item
        # and the weights themselves are finite (downloaded through the API, not read from disk)
        blob = client.get(f"/v1/jobs/{job_id}/checkpoints/{item['id']}/download")
        assert blob.status_code == 200
        with zipfile.ZipFile(io.BytesIO(blob.content)) as zf:
            for name in zf.namelist():
                if name.endswith(".safetensors"):
                    for key, t in st_load(zf.read(name)).items():
                        assert not t.is_floating_point() or bool(torch.isfinite(t).all()), (
                            item["step"],
                            key,
                        )


def test_a_diverging_run_with_rollback_recovers_and_finishes(client, run_job, monkeypatch):
    """on_divergence=rollback: a NaN at step 30 rolls the run back to its step-20 checkpoint
    with halved learning rates; the job succeeds and shows the rollback (also in its events)."""
    nan_d_loss_from(monkeypatch, 30, once=True)
    config = {**TINY, "steps": 40, "checkpoint_every": 10, "on_divergence": "rollback"}
    job_id = client.post("/v1/jobs", json={"config": config}).json()["id"]
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"]["step"] == 40 and job["error"] is None
    (rollback,) = job["rollbacks"]
    assert rollback["diverged_at"] == 30 and rollback["resumed_from"] == 20
    assert rollback["lr_scale"] == 0.5 and "diverged at step 30" in rollback["reason"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        data = next(line for line in r.iter_lines() if line.startswith("data: "))
    assert '"rollbacks":[{' in data


# ----------------------------------------------------------------- crashes while checkpointing


def _child_run(settings: Settings, job_id: str, crash_at: str) -> None:
    """A worker process that dies (os._exit, no cleanup, like SIGKILL) at ``crash_at``."""
    from app.core.db import forget_engines_after_fork

    forget_engines_after_fork()
    import gan_core.checkpoint as ckpt
    import worker.runner as runner

    if crash_at == "mid-file":  # halfway through a file of the second checkpoint
        real = ckpt._write_file
        writes = [0]

        def dying_write(path: Path, data: bytes):
            writes[0] += 1
            if writes[0] == 5:  # checkpoint 1: G, state, meta; checkpoint 2: G, *state*
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os._exit(137)
            return real(path, data)

        ckpt._write_file = dying_write
    elif crash_at == "before-record":  # the second checkpoint landed; its record did not
        import worker.hooks as hooks

        real_record = hooks.runs.record_checkpoint
        calls = [0]

        def dying_record(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 2:
                os._exit(137)
            return real_record(*args, **kwargs)

        hooks.runs.record_checkpoint = dying_record
    runner.run_job(job_id, settings=settings)
    os._exit(0)  # reached only if the crash never came


def _crash_a_run(settings: Settings, job_id: str, crash_at: str) -> None:
    proc = multiprocessing.get_context("fork").Process(
        target=_child_run, args=(settings, job_id, crash_at)
    )
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        pytest.fail("the crashing worker process hung")
    assert proc.exitcode == 137, f"the worker did not crash where intended (exit {proc.exitcode})"


def test_a_crash_halfway_through_writing_a_checkpoint_leaves_only_whole_ones_listed(
    client, settings, run_job
):
    job_id = create_job(client, steps=36, checkpoint_every=12)
    _crash_a_run(settings, job_id, "mid-file")
    root = _ckpt_root(settings, job_id)
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")], (
        "no half-written temp dir"
    )
    assert _assert_every_listed_checkpoint_serves(client, job_id) == [12]
    assert (
        client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    )  # until its lease runs out
    # another worker takes the job over, clears the half-written dir and resumes from step 12
    assert _run_when_claimable(run_job, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["progress"]["step"], job["attempts"]) == (36, 2)
    assert _assert_every_listed_checkpoint_serves(client, job_id) == [36, 24, 12]
    assert sorted(p.name for p in root.iterdir()) == [
        "step-00000012",
        "step-00000024",
        "step-00000036",
    ]


def test_a_crash_between_writing_and_recording_a_checkpoint_lists_no_missing_files(
    client, settings, run_job
):
    # keep 1: writing checkpoint 2 makes checkpoint 1 go; its record must not outlive its files
    job_id = create_job(client, steps=36, checkpoint_every=12, keep_checkpoints=1)
    _crash_a_run(settings, job_id, "before-record")
    assert _assert_every_listed_checkpoint_serves(client, job_id) == [12]
    assert _run_when_claimable(run_job, job_id) == "succeeded"
    assert _assert_every_listed_checkpoint_serves(client, job_id) == [36]
    assert [p.name for p in _ckpt_root(settings, job_id).iterdir()] == ["step-00000036"]


# ----------------------------------------------------------------- a full disk, an unwritable store


def test_disk_full_while_checkpointing_fails_the_job_with_the_reason(
    client, settings, run_job, monkeypatch
):
    import gan_core.checkpoint as ckpt

    real, writes = ckpt._write_file, [0]

    def full_disk(path: Path, data: bytes):
        writes[0] += 1
        if writes[0] == 5:  # the second checkpoint's train state
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", full_disk)
    job_id = create_job(client, steps=36, checkpoint_every=12)
    assert run_job(job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert "No space left on device" in job["error"], job["error"]
    assert job["finished_at"] and job["progress"]["step"] >= 12
    # the record matches the disk: the one whole checkpoint, nothing half-written beside it
    assert _assert_every_listed_checkpoint_serves(client, job_id) == [12]
    assert [p.name for p in _ckpt_root(settings, job_id).iterdir()] == ["step-00000012"]
    # space freed: resume finishes the job from there
    monkeypatch.undo()
    assert client.post(f"/v1/jobs/{job_id}/resume").status_code == 202
    assert run_job(job_id) == "succeeded"
    assert _assert_every_listed_checkpoint_serves(client, job_id) == [36, 24, 12]


def test_an_unwritable_run_directory_fails_the_job_with_the_oserror(client, settings, run_job):
    job_id = create_job(client)
    jobs_dir = settings.resolved_store_dir / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    (jobs_dir / job_id).write_text("not a directory")  # the store cannot hold this job's files
    assert run_job(job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"].startswith("could not write to the artifact store: "), job["error"]
    assert "File exists" in job["error"] or "Not a directory" in job["error"], job["error"]
    assert _listed(client, job_id) == []
    assert client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png").status_code == 404
