"""The S3-compatible store against a real S3-protocol server (moto's standalone server on
loopback): a fleet whose API and workers share nothing but Postgres, Redis and the bucket,
a job resumed on a worker with an empty cache, and an upload killed half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest

from app.core.artifacts.s3store import MARKER, S3Store
from gan_core import checkpoint as ckpt
from gan_core.config import TrainConfig
from gan_core.training import train
from tests.api.test_datasets import make_npz
from tests.integration.conftest import Proc, Stack, _need_redis, free_port
from tests.tiny import tiny

pytestmark = pytest.mark.integration
BUCKET = "ganforge-it"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> dict[str, str]:
    """A moto S3 server on a free loopback port with one bucket; the AWS_* variables for it."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("s3")
    server = Proc(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        dict(os.environ),
        tmp / "moto.log",
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(env["AWS_ENDPOINT_URL"], timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.2)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # for this process's boto3 clients too
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def objects(prefix: str) -> list[str]:
    import boto3

    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    )
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def steps_in_bucket(prefix: str, job_id: str) -> set[int]:
    head = f"{prefix}/jobs/{job_id}/checkpoints/"
    return {
        int(k[len(head) :].split("/")[0].removeprefix("step-"))
        for k in objects(head)
        if k.endswith(f"/{MARKER}")
    }


# ------------------------------------------------------------------- the store on its own


def test_an_upload_killed_half_way_is_never_listed_nor_loaded(s3, tmp_path):
    """A worker dies while a checkpoint's files go up: the objects it left have no marker,
    so another machine resumes from the checkpoint before it, and a retry completes it."""
    url = f"s3://{BUCKET}/crash"
    config = TrainConfig(**tiny(steps=20, checkpoint_every=10, keep_checkpoints=5))
    writer = S3Store(url, tmp_path / "a")
    run = writer.run_dir("job_crash")
    train(config, run)
    first, second = ckpt.list_checkpoints(run)
    writer.publish_checkpoint("job_crash", first)
    # pad the second with many small files so that its upload takes a while to kill
    for i in range(400):
        (second / f"pad-{i:03d}.bin").write_bytes(os.urandom(2048))
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from app.core.artifacts.s3store import S3Store
        S3Store({url!r}, Path({str(tmp_path / "a")!r})).publish_checkpoint(
            "job_crash", Path({str(second)!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    key = writer.key_of(second)
    deadline = time.monotonic() + 60
    while len(objects(f"crash/{key}/")) < 20:  # part of it is up
        assert proc.poll() is None, "the upload finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [k.rsplit("/", 1)[1] for k in objects(f"crash/{key}/")]
    assert 20 <= len(left) < 400 + 4, len(left)
    assert MARKER not in left and "meta.json" not in left  # the manifest goes last

    reader = S3Store(url, tmp_path / "b")  # another machine, an empty cache
    assert not reader.exists(key) and reader.exists(writer.key_of(first))
    resumed = reader.run_dir("job_crash")
    assert [p.name for p in ckpt.list_checkpoints(resumed)] == [first.name]
    assert ckpt.latest_checkpoint(resumed) == resumed / "checkpoints" / first.name
    assert not any(reader.local_path(key).glob("*"))  # nothing half-fetched either
    assert (resumed / "checkpoints" / first.name / "meta.json").is_file()

    writer.publish_checkpoint("job_crash", second)  # the retry, after a restart
    again = S3Store(url, tmp_path / "c").run_dir("job_crash")
    assert ckpt.latest_checkpoint(again) == again / "checkpoints" / second.name
    assert len(list((again / "checkpoints" / second.name).glob("pad-*"))) == 400

    writer.delete("jobs/job_crash")
    assert objects("crash/jobs/job_crash/") == []


def test_a_bad_store_url_or_a_missing_bucket_is_a_clear_error(s3, tmp_path):
    from app.core.artifacts.store import StoreError

    with pytest.raises(StoreError, match="s3://bucket"):
        S3Store("https://example.com/x", tmp_path)
    with pytest.raises(StoreError, match="s3://no-such-bucket is not writable"):
        S3Store("s3://no-such-bucket", tmp_path).ping()


def test_store_init_creates_the_bucket_once(s3, tmp_path):
    env = {**os.environ, "GANFORGE_DATA_DIR": str(tmp_path), "GANFORGE_STORE_URL": "s3://fresh/p"}
    run = [sys.executable, "-m", "app.cli", "store", "init"]
    out = [subprocess.run(run, env=env, capture_output=True, text=True) for _ in range(2)]
    assert [(o.returncode, o.stdout.split(":")[0]) for o in out] == [(0, "created"), (0, "ready")]
    import boto3

    boto3.client("s3").head_bucket(Bucket="fresh")  # raises if it is not there
    bad = subprocess.run(
        run,
        env={**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "cannot reach s3://fresh" in bad.stderr, bad.stderr


def test_a_bucket_gone_while_serving_is_a_503_and_records_nothing(s3, tmp_path):
    import boto3
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.core.artifacts.store import StoreError
    from app.core.settings import Settings
    from tests.api.conftest import make_key

    settings = Settings(data_dir=tmp_path, store_url="s3://flaky/x", score_samples=0)
    app = create_app(settings)
    with pytest.raises(StoreError, match="s3://flaky is not writable"), TestClient(app):
        pass  # it refuses to start
    boto3.client("s3").create_bucket(Bucket="flaky")
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        boto3.client("s3").delete_bucket(Bucket="flaky")  # empty: the start-up probe is gone
        x = np.zeros((8, 16, 16), np.uint8)
        r = c.post("/v1/datasets", files={"file": ("a.npz", make_npz(x=x), "application/zip")})
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert "artifact store" in r.json()["detail"]
        assert [d for d in c.get("/v1/datasets").json()["items"] if not d["builtin"]] == []
        assert not any((tmp_path / "store" / "datasets").glob("*"))
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert "flaky is not writable" in ready.json()["checks"]["store"]


def _moto(port: int, log) -> Proc:
    """moto's S3 server on ``port``, once it answers."""
    server = Proc(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        dict(os.environ),
        log,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}", timeout=1)
            return server
        except httpx.TransportError:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.2)


def test_new_work_is_refused_while_the_store_is_down_and_accepted_when_it_is_back(
    tmp_path, monkeypatch
):
    """The S3 server stops: job submits, resumes and uploads get 503 + Retry-After naming
    the store (they used to be accepted, then fail at the first checkpoint), and nothing is
    recorded; it starts again: 202."""
    import boto3
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.core.health import STORE_CHECK_SECONDS
    from app.core.settings import Settings
    from tests.api.conftest import make_key

    port = free_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = _moto(port, tmp_path / "moto.log")
    try:
        boto3.client("s3").create_bucket(Bucket="gate")
        settings = Settings(data_dir=tmp_path / "data", store_url="s3://gate/x", score_samples=0)
        key = make_key(settings, "alice")
        job = {"config": tiny(steps=20, checkpoint_every=10)}
        with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
            first = c.post("/v1/jobs", json=job)
            assert first.status_code == 202, first.text
            job_id = first.json()["id"]
            assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202

            server.stop()  # the store goes away
            time.sleep(STORE_CHECK_SECONDS)  # the last good probe's answer runs out
            x = np.zeros((8, 16, 16), np.uint8)
            refused = [
                c.post("/v1/jobs", json=job),
                c.post(f"/v1/jobs/{job_id}/resume"),
                c.post("/v1/datasets", files={"file": ("a.npz", make_npz(x=x), "application/zip")}),
            ]
            for r in refused:
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "5"
                assert r.headers["content-type"] == "application/problem+json"
                assert "artifact store (s3://gate/x) cannot be written" in r.json()["detail"]
            assert [j["id"] for j in c.get("/v1/jobs").json()["items"]] == [job_id]
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"
            assert c.get("/readyz").status_code == 503
            no_key = c.post("/v1/jobs", json=job, headers={"Authorization": ""})
            assert no_key.status_code == 401  # who asks is checked first

            server = _moto(port, tmp_path / "moto2.log")  # back (empty: moto keeps no data)
            boto3.client("s3").create_bucket(Bucket="gate")
            time.sleep(STORE_CHECK_SECONDS)
            again = c.post("/v1/jobs", json=job)
            assert again.status_code == 202, again.text
            assert c.post(f"/v1/jobs/{job_id}/resume").status_code == 202
    finally:
        server.stop()


# ------------------------------------------------------------------------ a fleet on S3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, pg_url, s3):
    """serve and workers with separate data directories: only the bucket is shared."""
    _need_redis()
    tmp = tmp_path_factory.mktemp("s3fleet")
    s = Stack(tmp, pg_url, extra_env={**s3, "GANFORGE_STORE_URL": f"s3://{BUCKET}/fleet"})
    s.start_api()
    try:
        s.workers.append(machine(s, "w0"))
        s.wait_ready()
        yield s
    finally:
        s.stop()


def machine(s: Stack, name: str) -> Proc:
    """A worker on its own 'machine': a data directory (and so a store cache) of its own."""
    env = {**s.env, "GANFORGE_DATA_DIR": str(s.tmp / name)}
    args = [sys.executable, "-m", "app.cli", "worker", "--hostname", f"{name}@s3"]
    return Proc(args, env, s.tmp / f"{name}.log")


def test_uploads_train_and_samples_go_through_the_bucket_and_delete_removes_them(fleet):
    c = fleet.client
    assert c.get("/readyz").json()["checks"]["store"] == "ok"
    x = np.random.default_rng(3).integers(0, 255, (64, 16, 16), dtype=np.uint8)
    r = c.post("/v1/datasets", files={"file": ("noise.npz", make_npz(x=x), "application/zip")})
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    assert f"fleet/datasets/{ds}/{MARKER}" in objects(f"fleet/datasets/{ds}/")

    config = tiny(dataset=ds, steps=40, checkpoint_every=10, keep_checkpoints=2)
    job_id = c.post("/v1/jobs", json={"config": config}).json()["id"]
    job = fleet.wait_status(job_id, {"succeeded", "failed", "canceled"})
    assert job["status"] == "succeeded", job
    stored = {x["step"] for x in c.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]}
    assert stored == {30, 40} == steps_in_bucket("fleet", job_id)  # pruned ones deleted
    api_cache = fleet.tmp / "data" / "store"
    assert not (api_cache / "jobs" / job_id).exists()  # the API never saw the run directory

    r = c.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&seed=1")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert list((api_cache / "objects").iterdir())  # fetched from the bucket by its hash

    assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert objects(f"fleet/jobs/{job_id}/") == []
    assert c.delete(f"/v1/datasets/{ds}").status_code == 204
    assert objects(f"fleet/datasets/{ds}/") == []


def test_a_job_handed_back_resumes_on_a_worker_with_an_empty_cache(fleet):
    """SIGTERM to the only worker mid-training: the job goes back to the queue with a
    checkpoint in the bucket, and a worker on another machine continues from it."""
    c = fleet.client
    config = tiny(steps=400, checkpoint_every=10, keep_checkpoints=100)
    job_id = c.post("/v1/jobs", json={"config": config}).json()["id"]
    fleet.wait_step(job_id, 35)
    (first,) = fleet.workers
    os.killpg(first.popen.pid, signal.SIGTERM)
    first.popen.wait(60)
    first.stop()
    handed_back = c.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    newest = handed_back[0]["step"]
    assert newest >= 35 and steps_in_bucket("fleet", job_id) >= {10, 20, 30, newest}
    assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"

    fleet.workers.append(machine(fleet, "w1"))
    done = fleet.wait_status(job_id, {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    run = fleet.tmp / "w1" / "store" / "jobs" / job_id / "checkpoints"
    here = [int(p.name.removeprefix("step-")) for p in ckpt.list_checkpoints(run.parent)]
    # it pulled only the newest checkpoint and trained on from there: a restart from 0
    # would have written steps 10, 20, ... again on this machine
    assert min(here) == newest and all(s > newest for s in here[1:]), here
    after = {x["id"]: x for x in c.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]}
    for row in handed_back:  # the first attempt's records untouched
        assert after[row["id"]]["created_at"] == row["created_at"]
    assert (run / f"step-{newest:08d}" / "meta.json").is_file()
    assert steps_in_bucket("fleet", job_id) >= {400}


def test_a_translation_job_trains_and_translates_through_the_bucket(fleet):
    """Pairs uploaded to the bucket, a paired job trained by a worker that shares nothing
    else with the API, and the API translating with the checkpoint it fetches."""
    from tests.api.test_pair_uploads import pairs_zip
    from tests.api.upload_helpers import png

    c = fleet.client
    r = c.post("/v1/datasets", files={"file": ("edges.zip", pairs_zip(n=8), "application/zip")})
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    config = {
        "kind": "paired",
        "dataset": ds,
        "image_size": 32,
        "g_width": 8,
        "d_width": 8,
        "batch_size": 2,
        "steps": 4,
        "checkpoint_every": 2,
    }
    job_id = c.post("/v1/jobs", json={"config": config}).json()["id"]
    job = fleet.wait_status(job_id, {"succeeded", "failed", "canceled"})
    assert job["status"] == "succeeded", job
    assert steps_in_bucket("fleet", job_id) == {2, 4}
    api_cache = fleet.tmp / "data" / "store"
    assert not (api_cache / "jobs" / job_id).exists()  # the API never saw the run directory

    edges = png((20, 20), "L", 255)
    r = c.post(
        f"/v1/jobs/{job_id}/checkpoints/latest/translate",
        content=edges,
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), r.text
    assert r.headers["x-checkpoint-step"] == "4"
    grid = c.get(f"/v1/jobs/{job_id}/checkpoints/latest/translations.png?n=2")
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG"), grid.text

    assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert objects(f"fleet/jobs/{job_id}/") == []
    assert c.delete(f"/v1/datasets/{ds}").status_code == 204
    assert objects(f"fleet/datasets/{ds}/") == []
