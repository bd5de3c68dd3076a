"""The jobs API through TestClient: create, read, list, cancel, resume, delete, errors."""

from __future__ import annotations

import json

from tests.api.conftest import TINY, cancel_midway


def _create(client, **config):
    r = client.post("/v1/jobs", json={"name": "t", "config": {**TINY, **config}})
    assert r.status_code == 202, r.text
    return r


def test_create_job_is_202_with_location_and_queued(client, settings):
    r = _create(client)
    body = r.json()
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "queued"
    assert body["progress"]["total_steps"] == TINY["steps"]
    assert body["config"]["g_width"] == 8
    # the message really went to the (embedded, filesystem) broker
    queued = list((settings.broker_dir / "queue").iterdir())
    assert len(queued) == 1 and body["id"] in queued[0].read_text()


def test_job_runs_to_succeeded_with_progress_and_checkpoints(client, run_job):
    job_id = _create(client).json()["id"]
    assert run_job(job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["progress"]["step"] == TINY["steps"]
    assert job["progress"]["images_per_sec"] > 0
    assert job["started_at"] and job["finished_at"] and job["first_step_at"]
    steps = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]]
    assert steps == [24, 12]


def test_idempotency_key_returns_the_same_job(client):
    headers = {"Idempotency-Key": "abc-1"}
    body = {"name": "t", "config": TINY}
    a = client.post("/v1/jobs", json=body, headers=headers)
    b = client.post("/v1/jobs", json=body, headers=headers)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"]
    assert len(client.get("/v1/jobs").json()["items"]) == 1
    other = client.post("/v1/jobs", json={"name": "other", "config": TINY}, headers=headers)
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key"


def test_list_is_newest_first_with_cursor_pagination_and_status_filter(client, run_job):
    ids = [_create(client).json()["id"] for _ in range(5)]
    run_job(ids[0])
    page1 = client.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2]
    page2 = client.get(f"/v1/jobs?limit=2&cursor={page1['next_cursor']}").json()
    page3 = client.get(f"/v1/jobs?limit=2&cursor={page2['next_cursor']}").json()
    seen = [j["id"] for p in (page1, page2, page3) for j in p["items"]]
    assert seen == ids[::-1]
    assert page3["next_cursor"] is None
    done = client.get("/v1/jobs?status=succeeded").json()["items"]
    assert [j["id"] for j in done] == [ids[0]]
    assert client.get("/v1/jobs?status=bogus").status_code == 422
    bad = client.get("/v1/jobs?cursor=notacursor")
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"


def test_cancel_queued_job_then_409_when_finished(client, run_job):
    job_id = _create(client).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    assert run_job(job_id) == "skipped"  # the queued message finds nothing to run
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


def test_resume_canceled_job_with_more_steps(client, run_job):
    job_id = _create(client).json()["id"]
    assert run_job(job_id) == "succeeded"
    assert (
        client.post(f"/v1/jobs/{job_id}/resume").status_code == 409
    )  # succeeded: nothing to resume
    # a job canceled mid-run resumes from its checkpoint and trains on to the new total ...
    job2, stopped = cancel_midway(client, run_job)
    total = stopped["step"] + 6
    r = client.post(f"/v1/jobs/{job2}/resume", json={"steps": total})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert r.json()["progress"]["total_steps"] == total
    assert run_job(job2) == "succeeded"
    assert client.get(f"/v1/jobs/{job2}").json()["progress"]["step"] == total
    # ... and ends with the very weights of a run that was never stopped (CPU training is
    # deterministic per seed): a restart from step 0 would not.
    straight = _create(client, steps=total).json()["id"]
    assert run_job(straight) == "succeeded"
    final = [
        client.get(f"/v1/jobs/{j}/checkpoints/latest").json()["files"] for j in (job2, straight)
    ]
    assert final[0]["generator.safetensors"] == final[1]["generator.safetensors"]
    assert final[0]["train_state.safetensors"] == final[1]["train_state.safetensors"]


def test_resume_steps_must_exceed_done(client, run_job):
    job_id, stopped = cancel_midway(client, run_job)
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": stopped["step"]})
    assert r.status_code == 422 and r.json()["field"] == "steps"
    assert f"greater than the {stopped['step']} steps already done" in r.json()["detail"]


def test_delete_job_removes_record_and_files(client, settings, trained_job):
    job_id, _ = trained_job
    run_dir = settings.resolved_store_dir / "jobs" / job_id
    assert run_dir.is_dir()
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/checkpoints").status_code == 404
    assert not run_dir.exists()


def test_delete_running_job_is_409(client, settings):
    from app.core.db import session_scope
    from app.core.jobs import runs

    job_id = _create(client).json()["id"]
    with session_scope(settings.resolved_database_url) as s:
        assert runs.claim_job(s, job_id=job_id, worker_id="w1", lease_seconds=60) is not None
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 409
    assert "running" in r.json()["detail"]


def test_unknown_job_is_problem_404(client):
    for method, url in [
        ("get", "/v1/jobs/job_nope"),
        ("post", "/v1/jobs/job_nope/cancel"),
        ("post", "/v1/jobs/job_nope/resume"),
        ("delete", "/v1/jobs/job_nope"),
        ("get", "/v1/jobs/job_nope/checkpoints"),
        ("get", "/v1/jobs/job_nope/checkpoints/latest/samples.png"),
    ]:
        r = getattr(client, method)(url)
        assert r.status_code == 404, (method, url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404


def test_bad_configs_are_422_naming_the_field(client):
    cases = {
        "config.image_size": {"image_size": 100},
        "config.batch_size": {"batch_size": 100_000},
        "config.g_lr": {"g_lr": 5.0},
        "config.steps": {"steps": 0},
        "config.precision": {"precision": "fp16", "device": "cpu"},
        "config.dataset": {"dataset": "npz:/etc/passwd"},
        "config.augment": {"augment": "color,sharpen"},
        "config.devices": {"devices": 65},
        "config.bogus": {"bogus": 1},
        "config.d_lr": {"d_lr": True},  # a boolean is not a learning rate
        "config.g_betas.0": {"g_betas": [True, 0.9]},
        # far past GANFORGE_MAX_JOB_MEMORY_BYTES: refused at once, not by a worker running out
        "config": {"image_size": 256, "g_width": 1024, "d_width": 1024, "batch_size": 4096},
    }
    for field, override in cases.items():
        r = client.post("/v1/jobs", json={"name": "t", "config": {**TINY, **override}})
        assert r.status_code == 422, (field, r.text)
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["field"] == field, (field, body)
        assert field.split(".")[-1] in body["detail"] or body["field"] in body["detail"]
    memory = client.post("/v1/jobs", json={"config": {**TINY, **cases["config"]}}).json()
    assert "GANFORGE_MAX_JOB_MEMORY_BYTES" in memory["detail"] and "GiB" in memory["detail"]


def test_missing_builtin_dataset_says_where_to_put_it(client, monkeypatch):
    import gan_core.data as data

    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", data.DEBIAN_FASHION_MNIST / "nowhere")
    r = client.post("/v1/jobs", json={"config": {**TINY, "dataset": "cifar10"}})
    assert r.status_code == 422
    assert r.json()["field"] == "config.dataset"
    assert "data_batch_1" in r.json()["detail"]


def test_malformed_json_is_422_not_500(client):
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_events_stream_ends_with_finished_job(client, trained_job):
    job_id, _ = trained_job
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    last = json.loads(lines[-1][len("data: ") :])
    assert last["status"] == "succeeded"


def test_failed_job_records_the_error(client, run_job, settings):
    from app.core.db import session_scope
    from app.core.models import Job

    job_id = _create(client).json()["id"]
    with session_scope(settings.resolved_database_url) as s:  # sabotage: a dataset that vanished
        s.get(Job, job_id).config = {**TINY, "dataset": "npz:/nonexistent.npz"}
    assert run_job(job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and "nonexistent" in job["error"]


def test_unknown_query_parameters_are_422_naming_them(client, trained_job):
    job_id, _ = trained_job
    for url, name in [
        ("/v1/jobs?limt=5", "limt"),
        (f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?seeds=3", "seeds"),
        (f"/v1/jobs/{job_id}?verbose=1", "verbose"),
    ]:
        r = client.get(url)
        assert r.status_code == 422 and r.json()["field"] == name, (url, r.text)
        assert "unknown query parameter" in r.json()["detail"]
    assert client.get("/v1/jobs?limit=5").status_code == 200


def test_an_unexpected_error_is_a_problem_json_500_not_plain_text(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.core.jobs import records as jobs
    from tests.api.conftest import make_key

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "list_jobs", broken)
    key = make_key(settings, "alice")
    with TestClient(
        create_app(settings),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {key}"},
    ) as c:
        r = c.get("/v1/jobs")
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 500 and "a bug" not in r.text  # no internals leak
        assert c.get("/healthz").status_code == 200


def test_an_idle_event_stream_sends_keep_alives(settings):
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from tests.api.conftest import make_key

    quick = settings.model_copy(update={"events_keepalive_seconds": 0.1})
    key = make_key(quick, "alice")
    with TestClient(create_app(quick), headers={"Authorization": f"Bearer {key}"}) as c:
        job_id = c.post("/v1/jobs", json={"config": TINY}).json()["id"]  # queued: nothing moves
        lines = []
        with c.stream("GET", f"/v1/jobs/{job_id}/events") as r:
            for line in r.iter_lines():
                lines.append(line)
                if line == ": keep-alive":
                    break
        assert lines[0].startswith("id: ") and lines[1] == "event: job"
        assert ": keep-alive" in lines
