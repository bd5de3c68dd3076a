"""Recovery, in process: a broker that is down (503s that leave nothing behind, retries that
work), and the sweep that finds jobs no live worker would run (canceled while away, dying
workers, lost messages). The fleet-level version is tests/integration/test_faults.py."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.core.db import session_scope, utcnow
from app.core.jobs import runs
from app.core.models import Job
from app.core.settings import Settings
from tests.api.conftest import TINY, create_job

# ----------------------------------------------------------------- the broker is down


@pytest.fixture
def broker_down(client, monkeypatch):
    from kombu.exceptions import OperationalError

    celery = client.app.state.services.celery
    calls = [0]

    def refuse(*_args, **_kwargs):
        calls[0] += 1
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery, "send_task", refuse)
    return calls


def test_create_while_the_broker_is_down_is_a_503_and_leaves_nothing_behind(client, broker_down):
    r = client.post("/v1/jobs", json={"config": TINY}, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == "5"
    assert "broker" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["items"] == []
    assert broker_down[0] == 1


def test_resume_while_the_broker_is_down_is_a_503_and_can_be_retried(client, run_job, monkeypatch):
    job_id = create_job(client)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
    celery = client.app.state.services.celery
    real_send = celery.send_task
    from kombu.exceptions import OperationalError

    def refuse(*_args, **_kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(celery, "send_task", refuse)
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 30})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    # not left 'queued' with no message on its way (nothing would ever run it, and a retry
    # of the resume would be refused with 409)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled", job
    assert job["progress"]["total_steps"] == TINY["steps"]
    monkeypatch.setattr(celery, "send_task", real_send)
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 30})
    assert r.status_code == 202, r.text
    assert run_job(job_id) == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] == 30


def test_a_stale_job_found_while_the_broker_is_down_is_requeued_once_it_is_back(
    client, settings, monkeypatch
):
    """The heartbeat sweep re-queues a dead worker's job; if sending its message fails, the next
    sweep must try again instead of leaving it 'queued' with no message."""
    import worker.sweep as sweep

    monkeypatch.setattr(sweep, "get_settings", lambda: settings)
    job_id = create_job(client)
    with session_scope(settings.resolved_database_url) as s:  # a worker claimed it, then died
        runs.claim_job(s, job_id=job_id, worker_id="dead", lease_seconds=-1)
    stop = threading.Event()
    stop.set()  # one sweep per call

    class BrokerDown:
        def enqueue(self, _job_id: str, _devices: int = 1) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

    sweep.heartbeat_loop("w1", stop, BrokerDown())
    queue = _Recording()
    sweep.heartbeat_loop("w1", stop, queue)
    assert queue.sent == [job_id]
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


# ----------------------------------------------------------------- the sweep: jobs nobody would run


class _Recording:
    """Stands in for the broker link: records what the sweep sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.devices: dict[str, int] = {}  # the device count (queue) each was sent with

    def enqueue(self, job_id: str, devices: int = 1) -> None:
        self.sent.append(job_id)
        self.devices[job_id] = devices


def _sweep(settings: Settings, queue: _Recording | None = None):
    from worker.sweep import sweep_once

    return sweep_once(settings, queue or _Recording())


def _die_holding(settings: Settings, job_id: str, worker_id: str = "dead") -> None:
    """A worker claims the job and dies at once: its lease is already expired."""
    with session_scope(settings.resolved_database_url) as s:
        assert runs.claim_job(s, job_id=job_id, worker_id=worker_id, lease_seconds=-1) is not None


def test_a_job_canceled_while_its_worker_is_away_ends_canceled_not_stuck(client, settings):
    """Cancel a running job whose worker is frozen, then the worker dies: the sweep must end
    the job as canceled. (It used to put it back to 'queued' with cancel_requested set, which
    no worker would claim; it held a slot of the owner's job limit forever.)"""
    job_id = create_job(client)
    _die_holding(settings, job_id)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    queue = _Recording()
    done = _sweep(settings, queue)
    assert done.canceled == [job_id] and queue.sent == []
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["finished_at"] is not None
    assert client.post(f"/v1/jobs/{job_id}/resume").status_code == 202  # and it can go on


def test_a_queued_job_with_a_cancel_request_is_finished_by_the_sweep(client, settings):
    job_id = create_job(client)
    with session_scope(settings.resolved_database_url) as s:  # as the old sweep left such jobs
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert _sweep(settings).canceled == [job_id]
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(client, settings):
    settings = settings.model_copy(update={"max_attempts": 3})
    job_id = create_job(client)
    queue = _Recording()
    for attempt in (1, 2):
        _die_holding(settings, job_id, f"dead{attempt}")
        assert _sweep(settings, queue).requeued == [job_id]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    _die_holding(settings, job_id, "dead3")
    done = _sweep(settings, queue)
    assert done.failed == [job_id] and queue.sent == [job_id, job_id]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["attempts"] == 3
    assert "died 3 times" in job["error"]


def test_a_queued_job_whose_message_was_lost_is_sent_again_after_the_bound(client, settings):
    settings = settings.model_copy(update={"requeue_after_seconds": 60})
    job_id = create_job(client)
    queue = _Recording()
    assert _sweep(settings, queue).resent == []  # just sent: not yet
    _age(settings, [job_id])  # an hour passes, nobody runs it ...
    (message,) = (settings.broker_dir / "queue").iterdir()  # ... and the broker loses its message
    message.unlink()
    assert _sweep(settings, queue).resent == [job_id]
    assert _sweep(settings, queue).resent == []  # once per bound, not every sweep
    assert queue.sent == [job_id]


def _age(settings: Settings, job_ids: list[str]) -> None:
    """Their messages went out about an hour ago, the first longest ago."""
    with session_scope(settings.resolved_database_url) as s:
        for i, job_id in enumerate(job_ids):
            sent = utcnow() - timedelta(seconds=3600 - i)
            s.execute(update(Job).where(Job.id == job_id).values(enqueued_at=sent))


@pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("redis", marks=pytest.mark.integration)]
)
def test_jobs_waiting_their_turn_are_not_resent_only_a_lost_message_is(tmp_path, broker):
    """A busy fleet: jobs queued for an hour behind others, each with its message in the
    broker. The sweep must not send them all again every minute (a storm of duplicates
    growing the queue); one message lost is sent again, once."""
    import redis
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from tests.api.conftest import make_key
    from tests.integration.conftest import REDIS_URL

    fleet = {"broker_url": REDIS_URL, "queue": f"t-{uuid.uuid4().hex[:8]}"}
    settings = Settings(
        data_dir=tmp_path,
        score_samples=0,
        requeue_after_seconds=60,
        **(fleet if broker == "redis" else {}),
    )
    if broker == "redis":
        r = redis.Redis.from_url(REDIS_URL)
        two = f"{settings.queue}.devices-2"  # the 2-device job's queue (app.core.jobs.queue)
        held = lambda: r.llen(settings.queue) + r.llen(two)  # noqa: E731
        lose = lambda: r.rpop(settings.queue)  # noqa: E731
    else:
        folder = settings.broker_dir / "queue"
        held = lambda: len(list(folder.iterdir()))  # noqa: E731
        lose = lambda: next(folder.iterdir()).unlink()  # noqa: E731
    key = make_key(settings, "alice")
    try:
        with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
            # no worker free: they wait their turn; one on 2 devices, whose message is on its
            # own queue, which the broker's count must include
            jobs = [create_job(c), create_job(c, devices=2), create_job(c)]
            queue = c.app.state.services.queue  # the real broker link
            assert held() == 3
            _age(settings, jobs)
            for _ in range(3):  # sweep after sweep: every queued job has its message
                assert _sweep(settings, queue).resent == []
            assert held() == 3
            lose()  # e.g. Redis restarted without persistence
            assert _sweep(settings, queue).resent == [jobs[0]]  # one short: the oldest, once
            assert held() == 3
            _age(settings, jobs)
            assert _sweep(settings, queue).resent == []
            assert held() == 3
    finally:
        if broker == "redis":
            r.delete(settings.queue)
