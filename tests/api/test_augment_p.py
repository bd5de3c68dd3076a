"""The augmentation probability of a job through the API: its progress, its history (JSON, CSV,
the losses chart), Prometheus, and the config's refusals, with jobs run as the worker runs them."""

from __future__ import annotations

import csv
import io
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import create_job

# p moves by 8 * 4 / 500 = 0.064 every 4 D updates: far enough within a tiny run to be seen
ADAPTIVE = {"augment_p": "adaptive", "ada_kimg": 0.5}


def test_adaptive_p_in_progress_history_csv_and_chart(client, run_job):
    job_id = create_job(client, steps=60, checkpoint_every=30, **ADAPTIVE)
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["config"]["augment"] == "translation,flip,color"  # the default set, stored
    p = job["progress"]["augment_p"]
    assert p is not None and 0 <= p <= 1

    train = client.get(f"/v1/jobs/{job_id}/metrics").json()["train"]
    ps = [t["augment_p"] for t in train]
    assert all(x is not None and 0 <= x <= 1 for x in ps)
    assert max(ps) > 0  # it moved off 0 (D beats a new G at first)
    assert train[-1]["step"] == 60 and train[-1]["augment_p"] == p

    r = client.get(f"/v1/jobs/{job_id}/metrics", headers={"Accept": "text/csv"})
    rows = [x for x in csv.DictReader(io.StringIO(r.text)) if x["kind"] == "train"]
    assert [float(x["augment_p"]) for x in rows] == ps

    chart = client.get(f"/v1/jobs/{job_id}/losses.png?width=400&height=300")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"


def test_a_job_without_augmentation_reports_null(client, run_job):
    job_id = create_job(client, steps=4)
    assert run_job(job_id) == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["augment_p"] is None
    train = client.get(f"/v1/jobs/{job_id}/metrics").json()["train"]
    assert train and all(t["augment_p"] is None for t in train)


def test_fixed_p_is_reported_as_set(client, run_job):
    job_id = create_job(client, steps=4, augment="flip,rot90", augment_p=0.3)
    assert run_job(job_id) == "succeeded"
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["augment_p"] == 0.3


def _gauge(client, job_id: str) -> float | None:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "ganforge_job_augment_p":
            for s in family.samples:
                if s.labels.get("job") == job_id:
                    return float(s.value)
    return None


def test_prometheus_shows_a_running_jobs_p(client, run_job):
    job_id = create_job(client, steps=1_000_000, checkpoint_every=100_000, **ADAPTIVE)
    runner = threading.Thread(target=lambda: run_job(job_id), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        gauge = None
        while gauge is None:
            assert time.monotonic() < deadline and runner.is_alive(), "no p reported"
            time.sleep(0.05)
            gauge = _gauge(client, job_id)
        assert 0 <= gauge <= 1
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
        runner.join(60)
    assert not runner.is_alive()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["progress"]["augment_p"] is not None
    assert _gauge(client, job_id) is None  # only running jobs


def test_config_refusals_name_the_field(client):
    for config, field in (
        ({"augment_p": 1.5, "augment": "flip"}, "config.augment_p"),
        ({"augment_p": "often", "augment": "flip"}, "config.augment_p"),
        ({"augment_p": 0.5}, "config.augment_p"),
        ({"augment_p": "adaptive", "augment": "none"}, "config.augment"),
        ({"ada_kimg": 50}, "config.ada_kimg"),
        ({"augment": "rot45"}, "config.augment"),
    ):
        r = client.post("/v1/jobs", json={"config": config})
        assert r.status_code == 422, (config, r.text)
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["field"] == field, (config, body)
