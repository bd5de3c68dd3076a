"""Webhooks through the API: refused targets, signed deliveries, retries, the outbox."""

from __future__ import annotations

import socket
import time

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.api.conftest import TINY, make_key
from tests.webhook_receiver import Receiver


def _client(settings, key: str) -> TestClient:
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})


def wait_delivered(client, job_id: str, count: int, timeout: float = 30) -> list[dict]:
    """The job's webhook deliveries once at least ``count`` are there and none is pending."""
    deadline = time.monotonic() + timeout
    while True:
        items = client.get(f"/v1/jobs/{job_id}/webhooks").json()["items"]
        if len(items) >= count and all(d["status"] != "pending" for d in items):
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://192.168.0.10/x",
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
    ],
)
def test_targets_inside_are_refused(client, url):
    r = client.post("/v1/jobs", json={"config": TINY, "webhook_url": url})
    assert r.status_code == 422 and r.json()["field"] == "webhook_url", r.text
    assert client.get("/v1/jobs").json()["items"] == []


def test_deliveries_are_signed_retried_and_visible(settings, run_job):
    hooks = settings.model_copy(
        update={
            "webhook_allow_private": True,
            "webhook_poll_seconds": 0.05,
            "webhook_backoff_seconds": 0.1,
        }
    )
    receiver = Receiver(fail_first=2)
    key = make_key(hooks, "alice")
    try:
        with _client(hooks, key) as client:
            receiver.secret = client.get("/v1/webhooks/secret").json()["secret"]
            r = client.post("/v1/jobs", json={"config": TINY, "webhook_url": receiver.url})
            assert r.status_code == 202 and r.json()["webhook_events"] == [
                "started",
                "checkpoint",
                "succeeded",
                "failed",
                "canceled",
                "translation",
            ]
            job_id = r.json()["id"]
            assert run_job(job_id) == "succeeded"
            items = wait_delivered(client, job_id, 4)
        events = [d["event"] for d in items]
        assert events == ["started", "checkpoint", "checkpoint", "succeeded"]
        assert all(d["status"] == "delivered" for d in items)
        first = items[0]  # it met the receiver's two failures, then got through
        assert [a["status_code"] for a in first["attempts"]] == [500, 500, 200]
        # deliveries are not ordered (a retried one comes later), each arrives once
        got = {r["id"]: r["payload"] for r in receiver.accepted()}
        assert all(r["valid"] for r in receiver.requests)  # every request was signed right
        assert sorted(got) == sorted(d["id"] for d in items)  # webhook-id = the delivery's id
        by_id = {d["id"]: d["event"] for d in items}
        assert all(got[i]["type"] == f"job.{by_id[i]}" for i in got)
        final = next(p for p in got.values() if p["type"] == "job.succeeded")
        assert final["data"]["status"] == "succeeded"
        steps = sorted(
            p["data"]["checkpoint"]["step"] for p in got.values() if p["type"] == "job.checkpoint"
        )
        assert steps == [TINY["checkpoint_every"], TINY["steps"]]
    finally:
        receiver.close()


def test_only_the_events_asked_for_are_sent_and_the_secret_rotates(settings, run_job):
    hooks = settings.model_copy(
        update={"webhook_allow_private": True, "webhook_poll_seconds": 0.05}
    )
    receiver = Receiver()
    key = make_key(hooks, "alice")
    try:
        with _client(hooks, key) as client:
            old = client.get("/v1/webhooks/secret").json()["secret"]
            new = client.post("/v1/webhooks/secret/rotate").json()["secret"]
            assert new.startswith("whsec_") and new != old
            receiver.secret = new
            job_id = client.post(
                "/v1/jobs",
                json={"config": TINY, "webhook_url": receiver.url, "webhook_events": ["succeeded"]},
            ).json()["id"]
            assert run_job(job_id) == "succeeded"
            items = wait_delivered(client, job_id, 1)
        assert [d["event"] for d in items] == ["succeeded"]
        assert receiver.accepted()[0]["valid"]  # signed with the rotated secret
    finally:
        receiver.close()


def test_a_name_that_resolves_inside_at_delivery_time_is_refused(settings, run_job, monkeypatch):
    """DNS rebinding: hooks.example resolves to a public address when the job is created and
    to 127.0.0.1 when the event is sent; the delivery refuses to connect."""
    real = socket.getaddrinfo
    answer = ["93.184.216.34"]

    def resolver(host, port, *args, **kwargs):
        if host == "hooks.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[0], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    hooks = settings.model_copy(update={"webhook_poll_seconds": 0.05, "webhook_retry_seconds": 0.5})
    key = make_key(hooks, "alice")
    with _client(hooks, key) as client:
        job_id = client.post(
            "/v1/jobs",
            json={
                "config": TINY,
                "webhook_url": "http://hooks.example/x",
                "webhook_events": ["succeeded"],
            },
        ).json()
        assert "id" in job_id, job_id
        answer[0] = "127.0.0.1"  # the attacker's DNS changes its answer
        assert run_job(job_id["id"]) == "succeeded"
        (delivery,) = wait_delivered(client, job_id["id"], 1)
    assert delivery["status"] == "failed"
    assert all(a["status_code"] is None and "127.0.0.1" in a["error"] for a in delivery["attempts"])


def test_events_wait_in_the_outbox_while_no_api_runs(settings, run_job):
    """The change and its outbox row commit together; with no API process running nothing is
    sent, and the next one to start delivers everything once."""
    hooks = settings.model_copy(
        update={"webhook_allow_private": True, "webhook_poll_seconds": 0.05}
    )
    receiver = Receiver()
    key = make_key(hooks, "alice")
    try:
        with _client(hooks, key) as client:
            receiver.secret = client.get("/v1/webhooks/secret").json()["secret"]
            paused = hooks.model_copy(update={"webhook_poll_seconds": 3600})
        with _client(paused, key) as client:  # an API whose dispatcher is asleep
            job_id = client.post(
                "/v1/jobs",
                json={
                    "config": TINY,
                    "webhook_url": receiver.url,
                    "webhook_events": ["started", "succeeded"],
                },
            ).json()["id"]
            time.sleep(0.2)
        assert run_job(job_id) == "succeeded"  # the worker records; no API is up
        time.sleep(0.3)
        assert receiver.requests == []
        with _client(hooks, key) as client:  # an API starts: the outbox drains
            items = wait_delivered(client, job_id, 2)
        assert [d["event"] for d in items] == ["started", "succeeded"]
        assert sorted(r["id"] for r in receiver.accepted()) == sorted(d["id"] for d in items)
    finally:
        receiver.close()


def test_a_target_refused_at_send_time_fails_at_once_with_the_reason(settings, run_job):
    """A job's webhook points at localhost (allowed when it was created); the API that sends
    has GANFORGE_WEBHOOK_ALLOW_PRIVATE off. No retry can change that answer: the delivery is
    failed on its first attempt, with the reason, instead of retried for 24 hours."""
    allowed = settings.model_copy(
        update={"webhook_allow_private": True, "webhook_poll_seconds": 3600}
    )
    receiver = Receiver()
    target = receiver.url.replace("127.0.0.1", "localhost")
    key = make_key(allowed, "alice")
    try:
        with _client(allowed, key) as client:  # its dispatcher asleep: nothing is sent here
            r = client.post(
                "/v1/jobs",
                json={"config": TINY, "webhook_url": target, "webhook_events": ["succeeded"]},
            )
            assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert run_job(job_id) == "succeeded"
        strict = settings.model_copy(update={"webhook_poll_seconds": 0.05})
        assert strict.webhook_allow_private is False and strict.webhook_retry_seconds >= 3600
        with _client(strict, key) as client:
            (delivery,) = wait_delivered(client, job_id, 1, timeout=10)
            time.sleep(0.3)  # a few more polls: nothing is tried again
            (again,) = client.get(f"/v1/jobs/{job_id}/webhooks").json()["items"]
        assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
        (attempt,) = again["attempts"]
        assert attempt["status_code"] is None
        assert "localhost resolves to" in attempt["error"] and "not retried" in attempt["error"]
        assert "GANFORGE_WEBHOOK_ALLOW_PRIVATE" in attempt["error"]
        assert receiver.requests == []
    finally:
        receiver.close()
