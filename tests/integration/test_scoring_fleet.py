"""Scoring in a fleet: two worker processes, one dataset, one extractor trained for both."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Stack, _need_redis
from tests.tiny import tiny

pytestmark = pytest.mark.integration


def test_two_workers_share_one_extractor_and_score_every_checkpoint(tmp_path, pg_url):
    _need_redis()
    stack = Stack(tmp_path, pg_url, extra_env={"GANFORGE_SCORE_SAMPLES": "64"})
    stack.start_api()
    stack.start_worker()
    stack.start_worker()
    try:
        stack.wait_ready()
        # the same data (shapes from seed 0) for both; they start at the same time, on two workers
        ids = [
            stack.client.post("/v1/jobs", json={"config": tiny(g_width=w, steps=36)}).json()["id"]
            for w in (8, 12)
        ]
        for job_id in ids:
            assert stack.wait_status(job_id, {"succeeded", "failed"})["status"] == "succeeded"
        logs = [w.log.read_text() for w in stack.workers]
        ran = [sum(f"job {j} ended succeeded" in log for log in logs) for j in ids]
        assert ran == [1, 1]
        # one of them trained the extractor; the other found it (waiting on the lock if need be)
        assert sum(log.count("training it (once for the fleet)") for log in logs) == 1, logs
        for job_id in ids:
            items = stack.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
            assert items and all(c["score_status"] == "scored" for c in items)
            best = stack.client.get(f"/v1/jobs/{job_id}/checkpoints/best").json()
            assert best["best"] and best["scores"]["fd"] == min(c["scores"]["fd"] for c in items)
    finally:
        stack.stop()
