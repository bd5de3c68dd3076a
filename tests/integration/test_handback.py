"""SIGTERM hands a job back first and scores later; a running job says its phase.

Real parts: `ganforge serve` and `ganforge worker` processes on Postgres and Redis, scoring
on with enough samples that one checkpoint's scoring takes far longer (~16 s here) than a
hand-back may (HANDED_BACK_WITHIN), and a dataset whose scorer takes ~25 s to train. A worker
used to finish preparing the scorer, score the checkpoint in flight and then the shutdown's
own before giving the job back, so `docker stop`'s 10 s killed it first and the job waited
out its lease (60 s, the default here) -- and a scorer's build lock for its ttl (15 min).
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import psycopg
import pytest

from tests.integration.conftest import Proc, Stack, _need_redis, fresh_database
from tests.integration.test_events import _events
from tests.tiny import tiny

pytestmark = pytest.mark.integration

HANDED_BACK_WITHIN = 10.0  # seconds from SIGTERM to 'queued'; it takes about 1 s
CONFIG = tiny(steps=2400, checkpoint_every=1200, keep_checkpoints=10)


@pytest.fixture
def stack(tmp_path):
    _need_redis()
    with fresh_database("ganforge_handback") as url:  # its own: the sweep sees every job
        s = Stack(tmp_path, url, extra_env={"GANFORGE_SCORE_SAMPLES": "5000"})
        s.db_url = url  # type: ignore[attr-defined]
        s.start_api()
        s.start_worker()
        try:
            s.wait_ready()
            yield s
        finally:
            s.stop()


def _checkpoints(stack: Stack, job_id: str) -> list[dict]:
    return stack.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]


def _db(stack: Stack, sql: str, *args) -> tuple:
    with psycopg.connect(stack.db_url) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql, args or None).fetchone()


def _sigterm_and_time_the_hand_back(stack: Stack, job_id: str, worker: Proc, group: bool) -> float:
    t0 = time.monotonic()
    (os.killpg if group else os.kill)(worker.popen.pid, signal.SIGTERM)
    job = stack.wait_for(job_id, lambda j: j["status"] == "queued", "handed back", timeout=90)
    handed_back_in = time.monotonic() - t0
    assert job["progress"]["phase"] is None  # a phase is said only while running
    worker.popen.wait(60)
    worker.stop()
    assert f"job {job_id} handed back to the queue" in worker.tail(300)
    return handed_back_in


def test_sigterm_hands_back_at_once_and_the_next_worker_scores_what_was_left(stack):
    job_id = stack.client.post("/v1/jobs", json={"config": CONFIG}).json()["id"]

    # 0. The phase, as a watcher sees it: the first job on this data waits at step 0 while
    # its dataset's scorer is trained, and the events say so. SIGTERM then: the job goes
    # back as it was, and the scorer's build lock is freed for the next worker.
    headers = dict(stack.client.headers)
    with (
        httpx.Client(base_url=stack.url, headers=headers, timeout=240) as c,
        c.stream("GET", f"/v1/jobs/{job_id}/events") as r,
    ):
        events = _events(
            r,
            lambda ev: (
                ev[-1][1] == "job" and ev[-1][2]["progress"]["phase"] not in (None, "starting")
            ),
        )
    last = events[-1][2]
    assert (last["status"], last["progress"]["phase"], last["progress"]["step"]) == (
        "running",
        "preparing_scorer",
        0,
    ), events
    deadline = time.monotonic() + 30
    while _db(stack, "SELECT count(*) FROM locks WHERE name LIKE 'scorer:%'") != (1,):
        assert time.monotonic() < deadline, stack.logs()  # the build has the lock
        time.sleep(0.1)
    (preparing,) = stack.workers
    took_0 = _sigterm_and_time_the_hand_back(stack, job_id, preparing, group=True)
    assert took_0 < HANDED_BACK_WITHIN, (took_0, preparing.tail(80))
    assert "shutdown while its scorer was prepared" in preparing.tail(300)
    assert _checkpoints(stack, job_id) == []
    assert _db(stack, "SELECT count(*) FROM locks") == (0,)

    # 1. The next worker builds the scorer (it used to wait out the lock). SIGTERM to it (to
    # the Celery parent, as `docker stop` sends it) while it scores its first checkpoint: the
    # scoring is left, the job goes back at once.
    first = stack.start_worker()
    job = stack.wait_for(job_id, lambda j: j["progress"]["phase"] == "scoring", "scoring")
    assert job["status"] == "running" and job["progress"]["step"] == 1200, job
    assert "training it (once for the fleet)" in first.tail(300)
    took = _sigterm_and_time_the_hand_back(stack, job_id, first, group=False)
    assert took < HANDED_BACK_WITHIN, (took, first.tail(80))
    (ckpt,) = _checkpoints(stack, job_id)
    assert (ckpt["step"], ckpt["score_status"], ckpt["scores"]) == (1200, "pending", None)
    assert "left unscored for the worker that resumes the job" in first.tail(300)

    # 2. The next worker scores it before training on; SIGTERM (to the group) mid-training:
    # the shutdown's checkpoint is recorded unscored and the job goes back at once.
    second = stack.start_worker()
    job = stack.wait_for(
        job_id,
        lambda j: j["progress"]["phase"] == "training" and j["progress"]["step"] > 1200,
        "training on",
    )
    assert job["attempts"] == 3 and job["best_checkpoint_id"] == ckpt["id"], job
    took_2 = _sigterm_and_time_the_hand_back(stack, job_id, second, group=True)
    assert took_2 < HANDED_BACK_WITHIN, (took_2, second.tail(80))
    newest, scored = _checkpoints(stack, job_id)
    assert 1200 < newest["step"] < 2400 and newest["score_status"] == "pending", newest
    assert scored["step"] == 1200 and scored["score_status"] == "scored", scored

    # 3. A third worker scores the shutdown's checkpoint and finishes; best is the lowest FD.
    third = stack.start_worker()
    done = stack.wait_for(job_id, lambda j: j["status"] == "succeeded", "succeeded")
    assert done["attempts"] == 4 and done["progress"]["phase"] is None, done
    items = _checkpoints(stack, job_id)
    assert [c["step"] for c in items] == [2400, newest["step"], 1200]
    assert all(c["score_status"] == "scored" and c["scores"]["fd"] > 0 for c in items), items
    best = min(items, key=lambda c: (c["scores"]["fd"], -c["step"]))
    assert done["best_checkpoint_id"] == best["id"] and done["best_fd"] == best["scores"]["fd"]
    assert f"scoring checkpoint {newest['id']} (step {newest['step']}), left unscored" in (
        third.tail(300)
    )
    # every time handed back, never recovered from an expired lease
    assert _db(stack, "SELECT worker_losses FROM jobs WHERE id = %s", job_id) == (0,)
    print(
        f"SIGTERM while preparing the scorer: queued after {took_0:.1f} s; while scoring: "
        f"{took:.1f} s; mid-training: {took_2:.1f} s"
    )
