"""A job on two devices in a fleet: `ganforge serve` and two `ganforge worker` processes on
Postgres and Redis, one announcing 1 device and one 2 (CPU processes: GANFORGE_WORKER_DEVICES).

The job is refused while no live worker has 2 devices, then runs only on the worker that
has them, as two ranks. SIGKILL of its rank 1 sends it back to the queue within seconds with
the reason, and it resumes from its last checkpoint; SIGTERM on its worker checkpoints and
hands it back, after which it says why it waits (the only live worker has 1 device); a new
2-device worker resumes it; a rank that stalls fails the group after the collective timeout
and the job goes back again; and a cancel stops both ranks at a checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import Stack, _need_redis, child_pids, fresh_database
from tests.tiny import tiny

pytestmark = pytest.mark.integration
BACK_WITHIN = 30.0  # seconds from a rank's SIGKILL to the job's next attempt; ~2 s here
CONFIG = tiny(devices=2, steps=100_000, checkpoint_every=20)
TIMEOUT = 10.0  # GANFORGE_COLLECTIVE_TIMEOUT_SECONDS here (300 by default)


@pytest.fixture
def stack(tmp_path):
    _need_redis()
    with fresh_database("ganforge_devices") as url:
        s = Stack(tmp_path, url, {"GANFORGE_COLLECTIVE_TIMEOUT_SECONDS": str(TIMEOUT)})
        s.db_url = url  # type: ignore[attr-defined]
        s.start_api()
        s.start_worker(GANFORGE_WORKER_DEVICES="1")
        try:
            s.wait_ready()
            yield s
        finally:
            s.stop()


def _db(stack: Stack, sql: str, *args) -> tuple:
    with psycopg.connect(stack.db_url) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql, args or None).fetchone()


def _state(pid: int) -> bytes:
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]


def _rank_1(stack: Stack, job_id: str) -> int:
    """The pid of the job's rank 1: a child of the forkserver that the pool process holding
    the job's lease (<host>:<pid>:<id>) started."""
    (owner,) = _db(stack, "SELECT lease_owner FROM jobs WHERE id = %s", job_id)
    pool = int(owner.split(":")[1])
    servers = [
        p for p in child_pids(pool) if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    ranks = [r for p in servers for r in child_pids(p)]
    assert len(ranks) == 1, (owner, servers, ranks)
    return ranks[0]


def test_a_two_device_job_runs_fails_over_hands_back_and_resumes(stack):
    r = stack.client.post("/v1/jobs", json={"config": CONFIG})
    assert r.status_code == 422 and r.json()["field"] == "config.devices", r.text
    assert "at most 1" in r.json()["detail"]

    two = stack.start_worker(GANFORGE_WORKER_DEVICES="2")
    deadline = time.monotonic() + 60
    while _db(stack, "SELECT count(*) FROM workers WHERE devices = 2") != (1,):
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.2)
    job_id = stack.client.post("/v1/jobs", json={"config": CONFIG}).json()["id"]
    job = stack.wait_for(job_id, lambda j: j["progress"]["step"] >= 50, "at step 50")
    (owner,) = _db(stack, "SELECT lease_owner FROM jobs WHERE id = %s", job_id)
    assert int(owner.split(":")[1]) in child_pids(two.popen.pid), owner  # the 2-device worker
    said = f"takes jobs on up to 2 devices (queues {stack.env['GANFORGE_QUEUE']}, "
    assert said in two.tail(2000)

    # 1. A rank dies: the group fails at once, the job goes back and resumes.
    os.kill(_rank_1(stack, job_id), signal.SIGKILL)
    t0 = time.monotonic()
    job = stack.wait_for(job_id, lambda j: j["attempts"] == 2, "re-claimed", timeout=BACK_WITHIN)
    back_in = time.monotonic() - t0
    assert "rank 1 was killed by SIGKILL" in job["error"], job
    assert "resume from its last checkpoint" in job["error"]
    assert _db(stack, "SELECT worker_losses FROM jobs WHERE id = %s", job_id) == (1,)
    ckpts = [c["step"] for c in stack.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]]
    assert ckpts and ckpts[0] % 20 == 0, ckpts
    job = stack.wait_for(job_id, lambda j: j["progress"]["step"] > ckpts[0] + 20, "training on")
    assert f"job {job_id}: the process group failed" in two.tail(300)

    # 2. SIGTERM on the worker (as `docker stop` sends it): rank 0 checkpoints and stops the
    # group, the job goes back, and with no 2-device worker left it says why it waits.
    os.kill(two.popen.pid, signal.SIGTERM)
    job = stack.wait_for(job_id, lambda j: j["status"] == "queued", "handed back", timeout=60)
    two.popen.wait(60)
    assert f"job {job_id} handed back to the queue" in two.tail(300)
    assert two.tail(2000).count("the process group failed") == 1  # rank 1 followed this time
    job = stack.wait_for(job_id, lambda j: j["queued_reason"], "a reason to wait", timeout=20)
    assert "needs a worker with 2 devices" in job["queued_reason"], job
    handed = stack.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"][0]["step"]

    # 3. A new 2-device worker resumes it from the hand-back's checkpoint.
    stack.start_worker(GANFORGE_WORKER_DEVICES="2")
    stack.wait_for(job_id, lambda j: j["progress"]["step"] > handed + 20, "resumed")

    # 4. A rank that stalls (SIGSTOP: alive, silent) fails the group after the collective
    # timeout, and the job goes back saying so; then a cancel stops it at a checkpoint.
    stalled = _rank_1(stack, job_id)
    os.kill(stalled, signal.SIGSTOP)
    t0 = time.monotonic()
    job = stack.wait_for(job_id, lambda j: j["attempts"] == 4, "re-claimed after a stall")
    stall_in = time.monotonic() - t0
    assert f"stalled past the {TIMEOUT:g} s collective timeout" in job["error"], job
    assert not Path(f"/proc/{stalled}").exists() or b"Z" in _state(stalled)  # killed
    stack.wait_for(job_id, lambda j: j["progress"]["step"] > job["progress"]["step"], "trains on")
    assert stack.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    done = stack.wait_for(job_id, lambda j: j["status"] == "canceled", "canceled", timeout=60)
    assert done["attempts"] == 4 and done["error"] is None, done
    last = stack.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"][0]["step"]
    assert last == done["progress"]["step"] > handed
    assert job_id not in stack.workers[0].tail(2000)  # the 1-device worker never took it
    png = stack.client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    print(
        f"rank 1 killed: the job's next attempt began {back_in:.1f} s later; stalled: "
        f"{stall_in:.1f} s later (timeout {TIMEOUT:g} s)"
    )
