"""Webhooks from a real server: killed between the state change and the delivery, restarted,
it delivers what was due, once, signed."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.conftest import Stack
from tests.tiny import tiny
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


def test_a_server_killed_before_delivering_delivers_after_its_restart(tmp_path):
    receiver = Receiver()
    stack = Stack(tmp_path, None)
    # first life: a dispatcher that never gets round to it (it reads the outbox hourly)
    stack.env.update(
        {
            "GANFORGE_SCORE_SAMPLES": "0",
            "GANFORGE_WEBHOOK_ALLOW_PRIVATE": "true",
            "GANFORGE_WEBHOOK_POLL_SECONDS": "3600",
        }
    )
    stack.start_api()
    try:
        stack.wait_ready()
        receiver.secret = stack.client.get("/v1/webhooks/secret").json()["secret"]
        job = stack.client.post(
            "/v1/jobs",
            json={
                "config": tiny(steps=20, checkpoint_every=10),
                "webhook_url": receiver.url,
                "webhook_events": ["started", "checkpoint", "succeeded"],
            },
        ).json()
        done = stack.wait_status(job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        pending = stack.client.get(f"/v1/jobs/{job['id']}/webhooks").json()["items"]
        assert [d["status"] for d in pending] == ["pending"] * 4 and receiver.requests == []
        os.killpg(stack.api.popen.pid, signal.SIGKILL)  # serve and its worker, no cleanup
        stack.api.popen.wait()
        stack.api.stop()
        stack.env["GANFORGE_WEBHOOK_POLL_SECONDS"] = "0.2"
        stack.start_api()
        stack.wait_ready()
        deadline = time.monotonic() + 30
        while True:
            items = stack.client.get(f"/v1/jobs/{job['id']}/webhooks").json()["items"]
            if all(d["status"] == "delivered" for d in items):
                break
            assert time.monotonic() < deadline, items
            time.sleep(0.2)
        got = receiver.accepted()
        assert sorted(r["id"] for r in got) == sorted(d["id"] for d in items)  # each once
        assert all(r["valid"] for r in got)
        assert sorted(r["payload"]["type"] for r in got) == [
            "job.checkpoint",
            "job.checkpoint",
            "job.started",
            "job.succeeded",
        ]
    finally:
        stack.stop()
        receiver.close()
