"""GET /metrics: Prometheus text, parsed with prometheus_client's own parser."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.main import create_app
from tests.api.conftest import TINY, make_key


def scrape(client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def _value(samples, name: str, **labels) -> float:
    hits = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert hits, (name, labels)
    return sum(hits)


def test_metrics_count_requests_by_route_template_and_report_the_fleet(client, run_job):
    # The process's counters are shared by every app in this test process: compare deltas.
    before = scrape(client)

    def grew(family: str, name: str, **labels) -> float:
        old = [s for s in before.get(family, [])]
        was = sum(
            s.value
            for s in old
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
        return _value(m[family], name, **labels) - was

    job_id = client.post("/v1/jobs", json={"config": TINY}).json()["id"]
    assert run_job(job_id) == "succeeded"
    for seed in (1, 1, 2):  # a miss, a hit, a miss
        assert (
            client.get(
                f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&seed={seed}"
            ).status_code
            == 200
        )
    client.get("/v1/jobs/job_0000000000000000")  # a 404
    m = scrape(client)
    requests = m["ganforge_http_requests"]
    sample_route = "/v1/jobs/{job_id}/checkpoints/{ckpt}/samples.png"
    http = "ganforge_http_requests"
    assert grew(http, "ganforge_http_requests_total", route="/v1/jobs/{job_id}", status="404") == 1
    assert grew(http, "ganforge_http_requests_total", route=sample_route, status="200") == 3
    assert not any(job_id in str(s.labels) for s in requests)  # templates, never raw ids
    seconds = "ganforge_http_request_seconds"
    assert grew(seconds, f"{seconds}_count", method="POST", route="/v1/jobs") == 1
    cache = "ganforge_sample_cache"
    assert grew(cache, "ganforge_sample_cache_total", result="hit") == 1
    assert grew(cache, "ganforge_sample_cache_total", result="miss") == 2
    render = "ganforge_sample_render_seconds"
    assert grew(render, f"{render}_count", kind="samples") == 2
    assert _value(m["ganforge_jobs"], "ganforge_jobs", status="succeeded") == 1
    assert _value(m["ganforge_jobs"], "ganforge_jobs", status="queued") == 0
    ckpts = len(client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"])
    writes = "ganforge_checkpoint_write_seconds"
    assert grew(writes, f"{writes}_count") == ckpts
    assert grew(writes, f"{writes}_bucket", le="+Inf") == ckpts
    assert _value(m["ganforge_queue_depth"], "ganforge_queue_depth", source="database") == 0


def test_metrics_can_require_an_admin_key(settings):
    locked = settings.model_copy(update={"metrics_auth": True})
    user, admin = make_key(locked, "alice"), make_key(locked, "root", admin=True)
    with TestClient(create_app(locked)) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Bearer {user}"}).status_code == 403
        assert c.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
