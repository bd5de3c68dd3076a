"""Faults in a real fleet: workers killed mid-training, Redis and the API restarted mid-job.

The stack here is this module's own: its own redis-server on a free port (it is killed and
restarted; the shared Redis on 6379 is never touched), its own Postgres database (its
workers' stale-lease sweep must not pick up other stacks' jobs), a short lease
(GANFORGE_LEASE_SECONDS=3) and two workers. Each test leaves at least one worker alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta

import httpx
import psycopg
import pytest

from tests.integration.conftest import Proc, Stack, free_port, fresh_database
from tests.tiny import tiny

pytestmark = pytest.mark.integration

LEASE = 3.0
REQUEUE_AFTER = 6.0  # a queued job's message is re-sent after this long
JOB = tiny(steps=400, checkpoint_every=50, keep_checkpoints=20)


def _redis_up(port: int, timeout: float = 20) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=1).ping()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def db_url():
    # Its own database: the stale-lease sweep covers every job in a database.
    with fresh_database("ganforge_faults") as url:
        yield url


class FaultStack(Stack):
    redis: Proc
    redis_port: int
    db_url: str

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.popen.poll() is None]

    def row(self, job_id: str) -> dict:
        with psycopg.connect(self.db_url) as conn:
            cur = conn.execute(
                "SELECT status, step, attempts, lease_owner, started_at, worker_losses "
                "FROM jobs WHERE id = %s",
                (job_id,),
            )
            status, step, attempts, owner, started, losses = cur.fetchone()
        return {
            "status": status,
            "step": step,
            "attempts": attempts,
            "lease_owner": owner,
            "started_at": started,
            "worker_losses": losses,
        }

    def runner_of(self, job_id: str) -> Proc:
        """The worker whose pool child holds the job's lease ('<host>:<pid>:<rand>')."""
        owner = self.row(job_id)["lease_owner"]
        assert owner, f"job {job_id} has no lease owner"
        pgid = os.getpgid(int(owner.split(":")[1]))
        (proc,) = [w for w in self.workers if w.popen.pid == pgid]
        return proc

    def checkpoints(self, job_id: str) -> list[dict]:
        r = self.client.get(f"/v1/jobs/{job_id}/checkpoints")
        assert r.status_code == 200, r.text
        return r.json()["items"]

    def watch(self, job_id: str, until: set[str], timeout: float = 150) -> tuple[dict, list[tuple]]:
        """Poll the job to a status in ``until``; returns it and the (attempts, status, step) seen."""
        seen: list[tuple] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            seen.append((job["attempts"], job["status"], job["progress"]["step"]))
            if job["status"] in until:
                return job, seen
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} stuck: {seen[-5:]}\n{self.logs()}")

    def wait_checkpointed(self, job_id: str, past: int, timeout: float = 120) -> None:
        """Until the job is running on past step ``past`` with a checkpoint recorded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.wait_step(job_id, past, timeout=timeout)
            if self.checkpoints(job_id):
                return
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} wrote no checkpoint: {job}\n{self.logs()}")

    def logs(self) -> str:
        return f"{super().logs()}\n--- redis ---\n{self.redis.tail(20)}"


@pytest.fixture(scope="module")
def fs(tmp_path_factory, db_url):
    tmp = tmp_path_factory.mktemp("faults")
    port = free_port()
    redis = Proc(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        dict(os.environ),
        tmp / "redis.log",
    )
    s = FaultStack(
        tmp,
        db_url,
        extra_env={
            "GANFORGE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "GANFORGE_LEASE_SECONDS": str(LEASE),
            "GANFORGE_REQUEUE_AFTER_SECONDS": str(REQUEUE_AFTER),
            "GANFORGE_MAX_ATTEMPTS": "3",
        },
    )
    s.redis, s.redis_port, s.db_url = redis, port, db_url
    try:
        _redis_up(port)
        s.start_api()
        s.start_worker()
        s.start_worker()
        s.wait_ready()
        yield s
    finally:
        s.stop()
        redis.stop()


def _post(fs: FaultStack, **config) -> str:
    r = fs.client.post("/v1/jobs", json={"name": "fault", "config": {**JOB, **config}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


_REFERENCE: dict[str, dict] = {}


def _uninterrupted_files(fs: FaultStack, config: dict) -> dict:
    """The final checkpoint files (sha256s) of the same config trained without interruption."""
    key = json.dumps(config, sort_keys=True)
    if key not in _REFERENCE:
        r = fs.client.post("/v1/jobs", json={"name": "reference", "config": config})
        done, _ = fs.watch(r.json()["id"], {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done
        _REFERENCE[key] = fs.checkpoints(done["id"])[0]["files"]
    return _REFERENCE[key]


def _assert_resumed(fs: FaultStack, job_id: str, config: dict, before: list[dict]) -> None:
    """The second attempt continued from the last checkpoint, not from step 0."""
    after = fs.checkpoints(job_id)
    # every checkpoint of the first attempt is still there, untouched: a restart from 0 would
    # have written (and re-recorded, with a new created_at) the same steps again
    kept = {c["id"]: c for c in after}
    for c in before:
        assert c["id"] in kept and kept[c["id"]]["created_at"] == c["created_at"], (c, after)
    # and it ended with exactly the weights of a run never interrupted (training is
    # deterministic per seed on CPU): resuming from anything but that checkpoint would not
    assert after[0]["files"] == _uninterrupted_files(fs, config)


# ---------------------------------------------------------------------------------- API restart


def test_api_killed_and_restarted_mid_job_leaves_training_and_records_intact(fs):
    job_id = _post(fs, steps=300)
    fs.wait_checkpointed(job_id, 60)
    before = fs.client.get(f"/v1/jobs/{job_id}").json()
    ckpts_before = fs.checkpoints(job_id)
    fs.api.kill()
    with pytest.raises(httpx.TransportError):
        fs.client.get("/healthz", timeout=2)
    # training goes on without the API: the worker writes progress straight to the database
    step0, deadline = fs.row(job_id)["step"], time.monotonic() + 60
    while fs.row(job_id)["step"] <= step0 and fs.row(job_id)["status"] == "running":
        assert time.monotonic() < deadline, "training stopped with the API"
        time.sleep(0.2)
    fs.api.start()
    fs.wait_ready()
    during = fs.client.get(f"/v1/jobs/{job_id}").json()
    for key in ("id", "created_at", "started_at", "config", "attempts"):
        assert during[key] == before[key], key
    assert during["progress"]["step"] > before["progress"]["step"]
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == 300 and done["attempts"] == 1
    after = {c["id"]: c for c in fs.checkpoints(job_id)}
    assert all(after.get(c["id"]) == c for c in ckpts_before)  # every record kept as it was
    assert sorted(c["step"] for c in after.values()) == [50, 100, 150, 200, 250, 300]
    png = fs.client.get(f"/v1/jobs/{job_id}/checkpoints/{ckpts_before[0]['id']}/samples.png?n=4")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


# ---------------------------------------------------------------------------------- Redis restart


def test_redis_killed_and_restarted_mid_job(fs):
    job_id = _post(fs, steps=400)
    fs.wait_step(job_id, 10)
    fs.redis.kill()
    try:
        # the API answers 503 at once, without hanging, and leaves no job behind
        t0 = time.monotonic()
        r = fs.client.post("/v1/jobs", json={"name": "while-down", "config": JOB})
        assert time.monotonic() - t0 < 10
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"] and "broker" in r.json()["detail"]
        names = [j["name"] for j in fs.client.get("/v1/jobs?limit=100").json()["items"]]
        assert "while-down" not in names
        # reads come from the database and still work; readiness names the broker
        job = fs.client.get(f"/v1/jobs/{job_id}")
        assert job.status_code == 200 and job.json()["status"] == "running"
        t0 = time.monotonic()
        ready = fs.client.get("/readyz")
        assert time.monotonic() - t0 < 10
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["broker"].startswith("error") and checks["database"] == "ok", checks
        # training goes on
        step0, deadline = job.json()["progress"]["step"], time.monotonic() + 60
        while fs.client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] <= step0:
            assert time.monotonic() < deadline, "training stalled while Redis was down"
            time.sleep(0.2)
    finally:
        fs.redis.start()  # same port; an empty Redis (no persistence), as after a crash
        _redis_up(fs.redis_port)
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == 400 and done["attempts"] == 1
    # the API and the workers reconnect: a new job is accepted and runs
    deadline = time.monotonic() + 30
    while (
        r := fs.client.post("/v1/jobs", json={"name": "after", "config": {**JOB, "steps": 20}})
    ).status_code == 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(1)
    assert r.status_code == 202, r.text
    after, _ = fs.watch(r.json()["id"], {"succeeded", "failed", "canceled"}, timeout=90)
    assert after["status"] == "succeeded", after
    assert fs.client.get("/readyz").status_code == 200


def test_a_job_whose_message_redis_lost_is_sent_again_and_runs(fs):
    """Queued while no worker is up; Redis restarts empty (no persistence) and the message is
    gone. It used to stay 'queued' forever (attempts 0, resume 409, a slot of the owner's job
    limit held); the sweep re-sends it after GANFORGE_REQUEUE_AFTER_SECONDS."""
    for w in fs.live_workers():
        w.stop()
    job_id = _post(fs, steps=20)
    fs.redis.kill()
    fs.redis.start()
    _redis_up(fs.redis_port)
    import redis

    assert redis.Redis(port=fs.redis_port).dbsize() == 0  # the message is gone
    t0 = time.monotonic()
    fs.start_worker()
    fs.start_worker()
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"}, timeout=90)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    print(f"lost message: the job ran {time.monotonic() - t0:.1f} s after workers came back")
    assert any(f"job {job_id} was queued for" in w.tail(400) for w in fs.live_workers())


def test_a_job_canceled_while_its_worker_is_frozen_and_then_killed_ends_canceled(fs):
    """Freeze the worker (SIGSTOP), cancel its job, kill the worker: the job used to go back
    to 'queued' with cancel_requested set, which no worker would claim ('not claimable'
    forever). Now the sweep of a live worker ends it canceled, keeping its checkpoints."""
    while len(fs.live_workers()) < 2:
        fs.start_worker()
    job_id = _post(fs, steps=100_000)
    fs.wait_checkpointed(job_id, 60)
    victim = fs.runner_of(job_id)
    os.killpg(victim.popen.pid, signal.SIGSTOP)
    try:
        r = fs.client.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "running"
        assert r.json()["cancel_requested"] is True
    finally:
        victim.kill()
    done, seen = fs.watch(job_id, {"succeeded", "failed", "canceled"}, timeout=60)
    assert done["status"] == "canceled", (done, seen[-5:])
    assert all(status != "queued" for _, status, _ in seen), seen
    assert fs.checkpoints(job_id)  # what it had trained is kept, and can be resumed
    assert (
        fs.client.post(
            f"/v1/jobs/{job_id}/resume", json={"steps": done["progress"]["step"] + 10}
        ).status_code
        == 202
    )
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"}, timeout=90)
    assert done["status"] == "succeeded", done


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(fs):
    """Each time the job runs, its worker dies (SIGKILL, as the OOM killer does). After
    GANFORGE_MAX_ATTEMPTS (3 here) it is failed with the reason, not re-queued forever."""
    job_id = _post(fs, steps=100_000)
    for attempt in (1, 2, 3):
        while len(fs.live_workers()) < 2:
            fs.start_worker()
        deadline = time.monotonic() + 90
        while not (fs.row(job_id)["attempts"] == attempt and fs.row(job_id)["status"] == "running"):
            assert time.monotonic() < deadline, (attempt, fs.row(job_id), fs.logs())
            time.sleep(0.2)
        fs.runner_of(job_id).kill()
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"}, timeout=60)
    assert done["status"] == "failed", done
    assert "died 3 times" in done["error"] and done["attempts"] == 3, done
    while len(fs.live_workers()) < 2:
        fs.start_worker()


# ---------------------------------------------------------------------------------- workers killed


def _kill_runner(fs: FaultStack, job_id: str) -> tuple[Proc, datetime, list[dict]]:
    fs.wait_checkpointed(job_id, 60)
    victim = fs.runner_of(job_id)
    victim.kill()  # SIGKILL to the group: the Celery parent and its pool child, no cleanup
    killed_at = datetime.utcnow()
    assert (
        fs.row(job_id)["status"] == "running"
    )  # the database still says so, until the lease runs out
    return victim, killed_at, fs.checkpoints(job_id)  # all the dead run recorded


def test_worker_killed_mid_training_its_job_resumes_on_the_other_worker(fs):
    while len(fs.live_workers()) < 2:
        fs.start_worker()
    job_id = _post(fs)
    victim, killed_at, before = _kill_runner(fs, job_id)
    survivors = fs.live_workers()
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == JOB["steps"]
    assert done["attempts"] == 2
    _assert_resumed(fs, job_id, JOB, before)
    # the other worker took the job over, and only after the dead one's lease ran out
    row = fs.row(job_id)
    assert row["started_at"] > killed_at + timedelta(seconds=LEASE / 2), (row, killed_at)
    assert any(f"job {job_id} ended succeeded" in w.tail(400) for w in survivors)
    assert f"job {job_id} ended" not in victim.tail(400)
    fs.start_worker()  # back to two


def test_all_workers_killed_mid_training_job_resumes_on_a_restarted_worker(fs):
    job_id = _post(fs)
    _, killed_at, before = _kill_runner(fs, job_id)
    for w in fs.live_workers():
        w.kill()
    time.sleep(LEASE)  # nobody is left to notice the stale lease
    assert fs.row(job_id)["status"] == "running"
    fresh = fs.start_worker()  # its first sweep finds the stale lease and re-queues the job
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == JOB["steps"] and done["attempts"] == 2
    _assert_resumed(fs, job_id, JOB, before)
    assert "lost its worker (lease expired); re-queued" in fresh.tail(400)
    assert f"job {job_id} ended succeeded" in fresh.tail(400)
    png = fs.client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4")
    assert png.status_code == 200


# ---------------------------------------------------------------------------------- SIGTERM


@pytest.mark.parametrize("target", ["group", "parent"])
def test_worker_sigterm_mid_training_checkpoints_and_hands_the_job_back(fs, target):
    """A deploy stops a worker with SIGTERM mid-training: to the process group (the Celery
    parent and its pool child), or to the parent only (PID 1 in a container). The running
    job writes a checkpoint where it is, releases its lease and goes back to the queue, so the
    other worker resumes it at once: no steps lost, no wait for the lease to run out.
    (It used to lose everything since the last checkpoint and wait the full lease.)"""
    while len(fs.live_workers()) < 2:
        fs.start_worker()
    config = {**JOB, "steps": 600, "checkpoint_every": 10_000}  # no periodic checkpoint
    job_id = _post(fs, **config)
    fs.wait_step(job_id, 30)
    victim = fs.runner_of(job_id)
    step_at_term = fs.row(job_id)["step"]
    t0 = time.monotonic()
    if target == "group":
        os.killpg(victim.popen.pid, signal.SIGTERM)
    else:
        os.kill(victim.popen.pid, signal.SIGTERM)
    resumed_after = None
    deadline = time.monotonic() + 60
    while resumed_after is None:
        row = fs.row(job_id)
        if row["attempts"] == 2 and row["status"] == "running":
            resumed_after = time.monotonic() - t0
        assert time.monotonic() < deadline, (row, fs.logs())
        time.sleep(0.05)
    handed_back = fs.checkpoints(job_id)
    try:
        victim.popen.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not exit within 60 s of SIGTERM\n{victim.tail()}")
    exited_in = time.monotonic() - t0
    victim.stop()  # closes its log
    assert f"job {job_id} handed back to the queue" in victim.tail(200)
    assert len(handed_back) == 1 and handed_back[0]["step"] >= step_at_term, (
        handed_back,
        step_at_term,
    )
    done, _ = fs.watch(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded" and done["progress"]["step"] == 600, done
    assert done["attempts"] == 2
    # handed back, not recovered by a sweep after its lease ran out (that counts a loss)
    assert fs.row(job_id)["worker_losses"] == 0
    _assert_resumed(fs, job_id, config, handed_back)  # from the shutdown's checkpoint
    print(
        f"SIGTERM to the {target} at step {step_at_term}: checkpoint at step "
        f"{handed_back[0]['step']} (0 steps lost), resumed elsewhere after {resumed_after:.2f} s, "
        f"worker exited after {exited_in:.1f} s"
    )
