"""Server-sent events from a real server while a job trains: a dropped connection resumed with
Last-Event-ID loses nothing and repeats nothing."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.tiny import tiny

pytestmark = pytest.mark.integration


def _events(stream, until):
    """(id, event, data) tuples from an open event stream until ``until(events)`` says stop."""
    events, current = [], {}
    for line in stream.iter_lines():
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append((current.get("id"), current["event"], current.get("data")))
            current = {}
            if until(events):
                break
    return events


def test_a_dropped_stream_resumes_where_it_left_off(tmp_path):
    stack = Stack(tmp_path, None)
    stack.env.update({"GANFORGE_SCORE_SAMPLES": "32", "GANFORGE_PROGRESS_INTERVAL": "0.2"})
    stack.start_api()
    try:
        stack.wait_ready()
        job = stack.client.post(
            "/v1/jobs", json={"config": tiny(steps=600, checkpoint_every=100, keep_checkpoints=10)}
        ).json()
        url = f"/v1/jobs/{job['id']}/events"
        headers = dict(stack.client.headers)
        with httpx.Client(base_url=stack.url, headers=headers, timeout=120) as c:
            with c.stream("GET", url) as r:  # until the first scored checkpoint, then drop it
                before = _events(r, lambda ev: any(e[1] == "checkpoint" for e in ev))
            time.sleep(2.0)  # training goes on while nobody listens
            with c.stream("GET", url, headers={"Last-Event-ID": str(before[-1][0])}) as r:
                after = _events(
                    r,
                    lambda ev: (
                        ev[-1][1] == "job"
                        and ev[-1][2]["status"] in ("succeeded", "failed", "canceled")
                    ),
                )
        ids = [e[0] for e in before + after]
        assert ids == sorted(set(ids)), ids  # increasing across the reconnect: nothing repeated
        assert after[-1][2]["status"] == "succeeded"
        seen = [e[2]["step"] for e in before + after if e[1] == "checkpoint"]
        steps = sorted(
            c["step"]
            for c in stack.client.get(f"/v1/jobs/{job['id']}/metrics").json()["checkpoints"]
        )
        assert seen == steps == [100, 200, 300, 400, 500, 600]  # every checkpoint, once
        assert all(e[2]["scores"] for e in before + after if e[1] == "checkpoint")
    finally:
        stack.stop()
