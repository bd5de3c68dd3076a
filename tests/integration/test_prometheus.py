"""/metrics of a real fleet during a real job: workers seen through the database, and two API
processes in Prometheus' multiprocess mode counting together."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Stack, _need_redis
from tests.tiny import tiny

pytestmark = pytest.mark.integration


def _samples(client: httpx.Client) -> list:
    r = client.get("/metrics")
    assert r.status_code == 200
    return [s for f in text_string_to_metric_families(r.text) for s in f.samples]


def _find(samples: list, name: str, **labels) -> list:
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_metrics_during_a_real_job_on_two_api_processes(tmp_path, pg_url):
    _need_redis()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    stack = Stack(tmp_path, pg_url, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    stack.start_api()
    second, url2 = stack.start_replica()
    stack.start_worker()
    try:
        stack.wait_ready()
        other = stack.replica_client(second, url2)
        job = stack.client.post(
            "/v1/jobs", json={"config": tiny(steps=1_000_000, checkpoint_every=200)}
        ).json()
        stack.wait_step(job["id"], 20)
        time.sleep(1.5)  # a progress report after the first one, with a real throughput
        for client, n in ((stack.client, 3), (other, 2)):
            for _ in range(n):
                assert client.get("/healthz").status_code == 200
        samples = _samples(other)  # either process sees both processes' counts
        healthz = _find(samples, "ganforge_http_requests_total", route="/healthz", status="200")
        assert sum(s.value for s in healthz) >= 5
        assert _find(samples, "ganforge_jobs", status="running")[0].value == 1
        speed = _find(samples, "ganforge_worker_images_per_second", job=job["id"])
        assert speed and speed[0].value > 0, speed
        ages = _find(samples, "ganforge_worker_heartbeat_age_seconds")
        assert ages and min(s.value for s in ages) < 30
        assert _find(samples, "ganforge_queue_depth", source="broker")  # Redis can say
        stack.client.post(f"/v1/jobs/{job['id']}/cancel")
        stack.wait_status(job["id"], {"canceled"})
    finally:
        stack.stop()
