"""Translation jobs through the API, as a user runs them: POST /v1/jobs with kind 'paired'
(pix2pix) or 'unpaired' (CycleGAN) on the built-in 'shapes-edges' or an uploaded zip, a
worker trains it (in this process), its checkpoints are listed, it resumes to more steps and
cancels; every refusal is a problem+json 4xx naming the field, and the noise-only pictures
of a translator's checkpoint are a clear 409."""

from __future__ import annotations

import threading
import time

import pytest

from tests.api.test_pair_uploads import pairs_zip
from tests.api.upload_helpers import assert_problem, make_zip, png, upload

# The smallest nets that train: 32 px (the U-Net's floor), widths 8, a batch of 2.
PAIRED = {
    "kind": "paired",
    "image_size": 32,
    "g_width": 8,
    "d_width": 8,
    "batch_size": 2,
    "steps": 4,
    "checkpoint_every": 2,
    "device": "cpu",
}
UNPAIRED = {**PAIRED, "kind": "unpaired", "pool_size": 4}


def domains_zip(a: int = 5, b: int = 6) -> bytes:
    """Two unpaired domains: grey horses (trainA/), colour zebras (trainB/) of other sizes."""
    members = {f"h2z/trainA/horse_{i}.png": png((20, 20), "L", 10 * i) for i in range(a)}
    members |= {f"h2z/trainB/zebra_{i}.png": png((24, 18), "RGB", (i, 90, 200)) for i in range(b)}
    return make_zip(members)


def submit(client, config: dict | None = None, **overrides):
    body = {"name": "translate", "config": {**(config or {}), **overrides}}
    return client.post("/v1/jobs", json=body)


def submitted(client, config: dict, **overrides) -> str:
    r = submit(client, config, **overrides)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def finished(client, run_job, job_id: str, status: str = "succeeded") -> dict:
    assert run_job(job_id) == status
    return client.get(f"/v1/jobs/{job_id}").json()


def checkpoint_steps(client, job_id: str) -> list[int]:
    r = client.get(f"/v1/jobs/{job_id}/checkpoints")
    assert r.status_code == 200, r.text
    return [c["step"] for c in r.json()["items"]]


@pytest.fixture
def paired_upload(client) -> dict:
    r = upload(client, pairs_zip(n=8), filename="edges.zip")  # 8 pairs: 6 train, 2 held out
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def unpaired_upload(client) -> dict:
    r = upload(client, domains_zip(), filename="h2z.zip")
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "unpaired"
    return r.json()


def test_paired_job_on_shapes_edges_trains_checkpoints_and_resumes(client, run_job):
    job_id = submitted(client, PAIRED)
    queued = client.get(f"/v1/jobs/{job_id}").json()
    assert queued["status"] == "queued" and queued["config"]["kind"] == "paired"
    assert queued["config"]["channels_a"] is None  # resolved by the worker, from the data
    job = finished(client, run_job, job_id)
    assert job["error"] is None and job["progress"]["step"] == 4
    config = job["config"]
    assert (config["kind"], config["dataset"], config["generator"]) == (
        "paired",
        "shapes-edges",
        "unet",
    )
    assert (config["channels_a"], config["channels_b"]) == (1, 3)  # edges -> colour shapes
    assert config["lambda_l1"] == 100.0 and "latent_dim" not in config
    assert job["progress"]["losses"] and job["progress"]["epoch"] > 0
    items = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert [c["step"] for c in items] == [4, 2]
    assert all(c["score_status"] == "off" and c["scores"] is None for c in items)
    assert {"generator.safetensors", "train_state.safetensors"} <= set(items[0]["files"])
    assert job["best_checkpoint_id"] is None  # nothing is scored for translators yet
    links = job["links"]
    assert links["samples"] == f"/v1/jobs/{job_id}/checkpoints/latest/translations.png"
    assert links["translate"] == f"/v1/jobs/{job_id}/checkpoints/latest/translate"
    # a translator's checkpoint links what it answers: translate and its grid, not samples
    ckpt = items[0]
    base = f"/v1/jobs/{job_id}/checkpoints/{ckpt['id']}"
    assert ckpt["links"]["translate"] == f"{base}/translate"
    assert ckpt["links"]["translations"] == f"{base}/translations.png"
    assert "samples" not in ckpt["links"] and "interpolation" not in ckpt["links"]
    assert client.get(f"{base}").json()["links"] == ckpt["links"]
    for name in ("translations", "onnx"):
        assert client.get(ckpt["links"][name]).status_code == 200, name

    # train longer: a resume to more steps continues from step 4
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": 6})
    assert r.status_code == 202, r.text
    assert r.json()["config"]["kind"] == "paired" and r.json()["progress"]["total_steps"] == 6
    job = finished(client, run_job, job_id)
    assert job["progress"]["step"] == 6 and job["config"]["steps"] == 6
    assert checkpoint_steps(client, job_id)[0] == 6


def test_paired_job_on_an_uploaded_paired_zip(client, run_job, paired_upload):
    job_id = submitted(client, PAIRED, dataset=paired_upload["id"])
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["dataset_id"] == paired_upload["id"]
    job = finished(client, run_job, job_id)
    assert (job["config"]["channels_a"], job["config"]["channels_b"]) == (1, 3)  # grey -> RGB
    assert checkpoint_steps(client, job_id) == [4, 2]
    # the upload is in use by the job's record: a finished job does not pin it
    assert client.get(f"/v1/datasets/{paired_upload['id']}").status_code == 200


def test_unpaired_job_on_an_uploaded_two_domain_zip(client, run_job, unpaired_upload):
    job_id = submitted(client, UNPAIRED, dataset=unpaired_upload["id"])
    job = finished(client, run_job, job_id)
    config = job["config"]
    assert (config["kind"], config["generator"], config["loss"]) == ("unpaired", "resnet", "lsgan")
    assert (config["channels_a"], config["channels_b"]) == (1, 3)
    # the domains' channels differ, so the identity loss is off (it needs the same channels)
    assert config["lambda_identity"] == 0.0
    assert checkpoint_steps(client, job_id) == [4, 2]
    assert set(job["progress"]["losses"]) >= {"d", "g"}


def test_cancel_a_running_translation_job_then_resume_it(client, run_job, paired_upload):
    job_id = submitted(client, PAIRED, steps=100_000, dataset=paired_upload["id"])
    runner = threading.Thread(target=run_job, args=(job_id,))
    runner.start()
    deadline = time.monotonic() + 60
    while not checkpoint_steps(client, job_id):
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.02)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    runner.join(60)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled", job
    stopped = job["progress"]["step"]
    assert checkpoint_steps(client, job_id)[0] == stopped  # the stop's own checkpoint
    r = client.post(f"/v1/jobs/{job_id}/resume", json={"steps": stopped + 2})
    assert r.status_code == 202, r.text
    job = finished(client, run_job, job_id)
    assert job["progress"]["step"] == stopped + 2
    # a queued translation job cancels at once, too
    queued = submitted(client, PAIRED, dataset=paired_upload["id"])
    r = client.post(f"/v1/jobs/{queued}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "canceled"


def test_refusals_are_problem_json_naming_the_field(client, paired_upload, unpaired_upload):
    paired_id, unpaired_id = paired_upload["id"], unpaired_upload["id"]
    cases = [
        # (config, field, words in the detail)
        ({**PAIRED, "kind": "weird"}, "config.kind", ("noise", "paired", "unpaired", "weird")),
        ({**PAIRED, "kind": 3}, "config.kind", ("paired",)),
        ({**PAIRED, "latent_dim": 16}, "config.latent_dim", ("paired",)),  # a noise field
        ({**UNPAIRED, "lambda_l1": 5.0}, "config.lambda_l1", ("unpaired",)),  # paired's field
        ({**PAIRED, "pool_size": 5}, "config.pool_size", ("paired",)),
        ({**PAIRED, "lambda_l1": -1.0}, "config.lambda_l1", ("0",)),
        ({**PAIRED, "image_size": 40}, "config.image_size", ("40", "multiple of 16")),
        ({**PAIRED, "generator": "dcgan"}, "config.generator", ("unet",)),
        # a dataset of the wrong kind
        ({**UNPAIRED}, "config.dataset", ("shapes-edges", "pairs", "two domains")),
        ({**UNPAIRED, "dataset": paired_id}, "config.dataset", (paired_id, "pairs")),
        ({**PAIRED, "dataset": unpaired_id}, "config.dataset", (unpaired_id, "two domains")),
        ({**PAIRED, "dataset": "shapes"}, "config.dataset", ("shapes", "images")),
        ({"dataset": "shapes-edges"}, "config.dataset", ("pairs", "kind 'paired'")),
        ({"dataset": paired_id}, "config.dataset", (paired_id, "pairs")),
        ({"dataset": unpaired_id}, "config.dataset", (unpaired_id, "two domains")),
        ({**PAIRED, "dataset": "pairs:/etc"}, "config.dataset", ("shapes-edges", "ds_")),
        ({**PAIRED, "dataset": "ds_nope"}, "config.dataset", ("ds_nope",)),
        # batch_size past the training split: 6 pairs; domain A has 5 - 2 held out = 3
        ({**PAIRED, "dataset": paired_id, "batch_size": 7}, "config.batch_size", ("6", "pairs")),
        (
            {**UNPAIRED, "dataset": unpaired_id, "batch_size": 4},
            "config.batch_size",
            ("3", "domain a"),
        ),
        # the service's limits hold for every kind
        ({**PAIRED, "steps": 2_000_000}, "config.steps", ("1000000", "per-job")),
    ]
    for config, field, words in cases:
        assert_problem(submit(client, config), 422, field, *words)
    assert client.get("/v1/jobs").json()["items"] == []
    # what fits is accepted: the same upload with a batch that fits each split
    ok = submit(client, UNPAIRED, dataset=unpaired_id, batch_size=3)
    assert ok.status_code == 202, ok.text


def test_unknown_kind_lists_the_kinds_in_errors(client):
    body = submit(client, kind="weird").json()
    assert body["field"] == "config.kind"
    assert body["errors"][0]["field"] == "config.kind"
    # a field error of a kind says which kind's fields were read
    body = submit(client, PAIRED, lambda_l1="x").json()
    assert body["errors"][0]["field"] == "config.lambda_l1"
    assert body["errors"][0]["kind"] == "paired"


def test_openapi_shows_the_kinds_of_job_config(client):
    schema = client.get("/openapi.json").json()
    config = schema["components"]["schemas"]["JobCreate"]["properties"]["config"]
    refs = {ref["$ref"].rsplit("/", 1)[-1] for ref in config["oneOf"]}
    assert refs == {"TrainConfig", "PairedConfig", "UnpairedConfig"}
    paired = schema["components"]["schemas"]["PairedConfig"]["properties"]
    assert "lambda_l1" in paired and "latent_dim" not in paired


def test_noise_only_pictures_of_a_translator_are_a_clear_409(client, run_job, paired_upload):
    job_id = submitted(client, PAIRED, steps=2, dataset=paired_upload["id"])
    finished(client, run_job, job_id)
    ckpt = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"][0]["id"]
    for ref in ("latest", ckpt):
        for what in ("samples.png", "interpolation.png"):
            r = client.get(f"/v1/jobs/{job_id}/checkpoints/{ref}/{what}")
            assert r.status_code == 409, (what, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "translat" in r.json()["detail"] and "/translate" in r.json()["detail"]
    r = client.get(f"/v1/jobs/{job_id}/timeline.png")
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "translat" in r.json()["detail"]
    # the job's own pages still answer, and its links name pictures it has
    assert client.get(f"/v1/jobs/{job_id}/metrics").status_code == 200
    assert client.get(f"/v1/jobs/{job_id}/losses.png").status_code == 200
    assert client.get(f"/v1/jobs/{job_id}/checkpoints/latest/download").status_code == 200
    links = client.get(f"/v1/jobs/{job_id}").json()["links"]
    r = client.get(links["samples"])  # (best_samples: none is best until scored, as for noise)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    page = client.get(f"/ui/jobs/{job_id}")  # the dashboard's job page
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_the_servers_job_limits_hold_for_translation_jobs(tmp_path):
    from tests.api.upload_helpers import app_with

    with app_with(
        tmp_path, min_checkpoint_every=25, max_checkpoints_per_job=200, max_jobs_per_owner=1
    ) as (c, _):
        assert_problem(submit(c, PAIRED), 422, "config.checkpoint_every", ">= 25")
        many = {**PAIRED, "steps": 100_000, "checkpoint_every": 25}
        assert_problem(submit(c, many), 422, "config.checkpoint_every", "checkpoints")
        assert submit(c, {**PAIRED, "checkpoint_every": 25}).status_code == 202
        r = submit(c, {**UNPAIRED, "dataset": "shapes-edges", "checkpoint_every": 25})
        assert r.status_code == 422  # the dataset is checked before the owner's limit
        r = submit(c, {**PAIRED, "checkpoint_every": 25, "seed": 1})
        assert r.status_code == 429 and r.headers["Retry-After"], r.text


def test_with_scoring_on_a_translator_trains_and_is_announced(settings, tmp_path):
    """On a server that scores checkpoints a translation job trains to its end, each of its
    checkpoints final (scored, or 'off' where no scorer is there for its kind; never left
    pending), and its events and webhooks are those of any job."""
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from tests.api.conftest import make_key
    from tests.webhook_receiver import Receiver
    from worker.runner import run_job

    scoring = settings.model_copy(
        update={
            "score_samples": 64,
            "webhook_allow_private": True,
            "webhook_poll_seconds": 0.05,
        }
    )
    receiver = Receiver()
    key = make_key(scoring, "alice")
    try:
        with TestClient(create_app(scoring), headers={"Authorization": f"Bearer {key}"}) as c:
            receiver.secret = c.get("/v1/webhooks/secret").json()["secret"]
            ds = upload(c, pairs_zip(n=8)).json()["id"]
            r = c.post(
                "/v1/jobs",
                json={"config": {**PAIRED, "dataset": ds}, "webhook_url": receiver.url},
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            assert run_job(job_id, settings=scoring) == "succeeded"
            items = c.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
            assert [i["step"] for i in items] == [4, 2]
            assert all(i["score_status"] in ("off", "scored") for i in items), items
            metrics = c.get(f"/v1/jobs/{job_id}/metrics").json()
            assert [p["step"] for p in metrics["checkpoints"]] == [2, 4]
            assert metrics["train"]
            events_url = f"/v1/jobs/{job_id}/events"
            with c.stream("GET", events_url, headers={"Last-Event-ID": "0"}) as r:
                events = [line for line in r.iter_lines() if line.startswith("event: ")]
                # the stream ends with the finished job
            assert events.count("event: checkpoint") == 2 and events[-1] == "event: job"
            deadline = time.monotonic() + 30
            while True:
                deliveries = c.get(f"/v1/jobs/{job_id}/webhooks").json()["items"]
                if len(deliveries) >= 4 and all(d["status"] != "pending" for d in deliveries):
                    break
                assert time.monotonic() < deadline, deliveries
                time.sleep(0.1)
        got = sorted(r["payload"]["type"] for r in receiver.accepted())
        assert got == ["job.checkpoint", "job.checkpoint", "job.started", "job.succeeded"]
        assert all(r["valid"] for r in receiver.requests)
    finally:
        receiver.close()


def test_a_translator_too_big_for_the_server_is_refused_with_its_estimate(client):
    huge = {**PAIRED, "image_size": 256, "g_width": 512, "d_width": 512, "batch_size": 1024}
    body = assert_problem(submit(client, huge), 422, "config", "GiB")
    assert "GANFORGE_MAX_JOB_MEMORY_BYTES" in body["detail"]
    assert submit(client, PAIRED).status_code == 202  # the tiny one fits


def test_kind_noise_is_the_default_and_an_idempotency_key_covers_any_kind(client):
    from tests.tiny import TINY

    noise = submit(client, {**TINY, "kind": "noise"})
    assert noise.status_code == 202, noise.text
    assert "kind" not in noise.json()["config"]  # a config without kind is noise
    key = {"Idempotency-Key": "edges-1"}
    body = {"name": "t", "config": PAIRED}
    first = client.post("/v1/jobs", json=body, headers=key)
    again = client.post("/v1/jobs", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = {"name": "t", "config": {**PAIRED, "lambda_l1": 10.0}}
    r = client.post("/v1/jobs", json=other, headers=key)
    assert_problem(r, 409, "Idempotency-Key")
