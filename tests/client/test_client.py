"""ganforge_client.Client against a real `ganforge serve`: every method, pagination, waiting,
an event stream that survives a dropped connection, pictures, and errors as exceptions."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from ganforge_client import (
    ApiError,
    Client,
    Conflict,
    ConnectionFailed,
    Invalid,
    Job,
    JobCanceled,
    JobFailed,
    NotFound,
    Unauthorized,
    datasets,
)
from tests.client.conftest import ROOT
from tests.integration.conftest import free_port
from tests.tiny import tiny

pytestmark = pytest.mark.integration
# Scores on (few samples), so checkpoints/best exists, and a 1 MiB upload cap to hit. Every
# job here trains on a small upload: the scorer's extractor is trained once per dataset
# (at least 900 steps, ~10 s), and on the 20k built-in shapes it would take half a minute.
SERVER_ENV = {"GANFORGE_SCORE_SAMPLES": "32", "GANFORGE_MAX_UPLOAD_BYTES": str(2**20)}


def _npz(path, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    np.savez(path, x=x, y=rng.integers(0, 3, n))
    return path


@pytest.fixture(scope="module")
def config(server, key, tmp_path_factory):
    """tiny(**overrides) on a 200-image upload."""
    with Client(server.url, key) as c:
        ds = c.upload_dataset(_npz(tmp_path_factory.mktemp("data") / "small.npz", 200))
    return lambda **overrides: tiny(dataset=ds.id, **overrides)


@pytest.fixture(scope="module")
def trained(server, key, config) -> Job:
    """One finished tiny job with two checkpoints, scored, shared by the read-only tests."""
    with Client(server.url, key) as c:
        job = c.create_job(config(), name="trained")
        done = c.wait(job.id, timeout=120)
        assert done.status == "succeeded", done
        return done


def test_upload_list_get_delete_a_dataset(client, tmp_path, monkeypatch):
    path = _npz(tmp_path / "noise.npz", 300)
    size = path.stat().st_size
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 4096)  # several chunks: progress between the ends
    ds = client.upload_dataset(path, name="noise", progress=lambda s, t: seen.append((s, t)))
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert len(seen) > 3 and [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert (ds.name, ds.kind, ds.num_images, ds.num_classes) == ("noise", "npz", 300, 3)
    assert ds.id in [d.id for d in client.list_datasets()]
    assert "shapes" in [d.id for d in client.list_datasets() if d.builtin]
    assert client.get_dataset(ds.id).size_bytes == size
    client.delete_dataset(ds.id)
    with pytest.raises(NotFound):
        client.get_dataset(ds.id)

    big = tmp_path / "big.npz"
    big.write_bytes(b"\0" * (3 * 2**20))  # over the cap: refused on its Content-Length
    with pytest.raises(Invalid) as err:
        client.upload_dataset(big)
    assert err.value.status == 413 and err.value.field == "file"

    bad = tmp_path / "notes.txt"
    bad.write_text("not a dataset")
    with pytest.raises(Invalid) as err:
        client.upload_dataset(bad)
    assert err.value.status == 415 and err.value.field == "file"


def test_upload_two_domains_and_the_builtin_pairs(client, tmp_path):
    path = tmp_path / "h2z.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for domain, n, mode in (("A", 3, "L"), ("B", 4, "RGB")):
            for i in range(n):
                buf = io.BytesIO()
                Image.new(mode, (8, 8)).save(buf, format="PNG")
                zf.writestr(f"{domain}/{i}.png", buf.getvalue())  # names in common: ask
    with pytest.raises(Invalid) as err:
        client.upload_dataset(path)
    assert err.value.status == 422 and "B/3.png" in str(err.value)
    ds = client.upload_dataset(path, pairing="unpaired")
    assert (ds.kind, ds.pairing, ds.num_images, ds.val_size) == ("unpaired", "unpaired", 7, 4)
    assert ds.domains is not None and ds.domains["A"]["channels"] == 1
    assert client.get_dataset(ds.id).domains == ds.domains
    edges = next(d for d in client.list_datasets() if d.id == "shapes-edges")
    assert edges.builtin and edges.pairing == "paired"
    client.delete_dataset(ds.id)


def test_create_is_idempotent_and_wait_reports_progress(client, config):
    job = client.create_job(config(steps=48), name="waited", idempotency_key="wait-1")
    assert job.status == "queued" and job.name == "waited"
    assert client.create_job(config(steps=48), name="waited", idempotency_key="wait-1").id == job.id
    seen: list[Job] = []
    done = client.wait(job.id, timeout=120, progress=seen.append)
    assert done.status == "succeeded" and done.progress.step == 48
    assert seen[-1] == done
    assert "running" in [j.status for j in seen]
    steps = [j.progress.step for j in seen]
    assert steps == sorted(steps) and len(set(steps)) > 1
    assert client.get_job(job.id).finished_at is not None


def test_list_jobs_follows_cursors(client, config):
    made = [client.create_job(config(steps=10_000), name=f"page{i}").id for i in range(3)]
    for job_id in made:
        client.cancel_job(job_id)
    for job_id in made:
        with pytest.raises(JobCanceled) as canceled:
            client.wait(job_id, timeout=60)
        assert canceled.value.job.status == "canceled" and canceled.value.job.id == job_id
    everything = [j.id for j in client.list_jobs(limit=1)]  # one job per request
    assert everything == [j.id for j in client.jobs_page(limit=100).items]  # newest first
    assert everything[: len(made)] == made[::-1]
    first = client.jobs_page(limit=1)
    assert len(first.items) == 1 and first.next_cursor
    second = client.jobs_page(limit=1, cursor=first.next_cursor)
    assert second.items[0].id == everything[1]
    canceled = [j.id for j in client.list_jobs(status="canceled", limit=2)]
    assert set(made) <= set(canceled)


class _Recording(httpx.HTTPTransport):
    """A real transport that remembers every request's headers."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


def test_events_reconnect_with_last_event_id_after_a_drop(server, key, config):
    transport = _Recording()
    with Client(server.url, key, transport=transport) as c:
        job = c.create_job(config(steps=200, checkpoint_every=50, keep_checkpoints=10))
        events = c.events(job.id)
        before = []
        for event in events:
            before.append(event)
            if event.event == "checkpoint":
                break
        assert events.response is not None
        events.response.close()  # the connection goes away under the iterator
        after, first_connection = [], list(before)
        for event in events:  # what was already read off the closed connection, then the rest
            after.append(event)
            if events.reconnects == 0:
                first_connection.append(event)
        assert events.reconnects == 1
        streams = [r for r in transport.requests if r.url.path.endswith("/events")]
        assert "last-event-id" not in streams[0].headers
        assert streams[1].headers["last-event-id"] == str(first_connection[-1].id)
        ids = [e.id for e in before + after]
        assert ids == sorted(set(ids)), ids  # nothing repeated, nothing out of order
        final = after[-1].job
        assert final is not None and final.status == "succeeded"
        seen = [e.data["step"] for e in before + after if e.event == "checkpoint"]
        assert seen == [c.step for c in c.metrics(job.id).checkpoints] == [50, 100, 150, 200]

        # Started after the last event: nothing more to send, and the iterator just ends.
        assert list(c.events(job.id, last_event_id=after[-1].id)) == []


def test_checkpoints_pictures_and_metrics(client, trained, tmp_path):
    ckpts = client.list_checkpoints(trained.id)
    assert [c.step for c in ckpts] == [24, 12]  # newest first
    latest = client.get_checkpoint(trained.id, "latest")
    assert latest.id == ckpts[0].id and client.get_checkpoint(trained.id, latest.id).step == 24
    best = client.get_checkpoint(trained.id, "best")
    assert best.best and best.score_status == "scored" and best.scores and best.scores.fd
    assert best.id == client.get_job(trained.id).best_checkpoint_id

    png = client.samples(trained.id, n=4, nrow=2, seed=3)
    assert png.startswith(b"\x89PNG") and png.checkpoint_id == latest.id and png.step == 24
    assert client.samples(trained.id, "latest", n=4, nrow=2, seed=3) == png  # same bytes
    img = client.samples(trained.id, best.id, n=4, nrow=2, ema=False, image=True)
    assert isinstance(img, Image.Image) and img.size == (2 * 18 + 2, 2 * 18 + 2)
    assert client.samples(trained.id, "best", n=1, truncation=0.5).checkpoint_id == best.id
    walk = client.interpolation(trained.id, from_seed=1, to_seed=2, steps=5, image=True)
    assert walk.size == (5 * 18 + 2, 18 + 2)

    metrics = client.metrics(trained.id)
    assert [c.step for c in metrics.checkpoints] == [12, 24] and metrics.train
    assert client.metrics_csv(trained.id).startswith("kind,step,")
    losses = client.losses_png(trained.id, width=400, height=200, image=True)
    assert losses.size == (400, 200)
    assert client.timeline_png(trained.id, n=2, rows=2).startswith(b"\x89PNG")
    assert client.timeline_gif(trained.id, n=2).media_type == "image/gif"

    zipped = client.download_checkpoint(trained.id, "latest", tmp_path)  # a folder: server's name
    assert zipped.name == f"{trained.id}-step24.zip"
    assert f"{trained.id}-step24/meta.json" in zipfile.ZipFile(zipped).namelist()
    named = client.download_checkpoint(trained.id, best.id, tmp_path / "best.zip")
    assert zipfile.ZipFile(io.BytesIO(named.read_bytes())).testzip() is None
    assert not list(tmp_path.glob(".*.part"))


def test_resume_and_delete(client, config):
    job = client.create_job(config(steps=10_000), name="to-resume")
    assert client.cancel_job(job.id).cancel_requested
    with pytest.raises(JobCanceled) as canceled:
        client.wait(job.id, timeout=60)
    assert canceled.value.job.status == "canceled"
    resumed = client.resume_job(job.id, steps=12, devices=1)  # the same one device, said
    assert resumed.status == "queued" and resumed.progress.total_steps == 12
    assert resumed.config["devices"] == 1 and resumed.queued_reason is None
    assert client.wait(job.id, timeout=60).status == "succeeded"
    client.delete_job(job.id)
    with pytest.raises(NotFound):
        client.get_job(job.id)
    with pytest.raises(NotFound):
        client.events(job.id).__next__()


def test_wait_raises_for_a_failed_job_and_watch_exits_1(server, client, cli_env, tmp_path):
    """A job that fails on the worker (its stored upload went bad on disk after the upload was
    accepted): wait() raises JobFailed carrying the final record and the worker's reason,
    instead of returning it for the next call to trip over; `jobs watch` says why, exits 1."""
    ds = client.upload_dataset(_npz(tmp_path / "doomed.npz", 64))
    stored = [p for p in server.tmp.rglob(f"datasets/{ds.id}/**/*") if p.is_file()]
    assert stored, list(server.tmp.rglob("datasets/*"))
    for path in stored:
        path.write_bytes(b"not an npz any more")
    job = client.create_job(tiny(dataset=ds.id, steps=24))
    with pytest.raises(JobFailed) as failed:
        client.wait(job.id, timeout=120)
    assert not isinstance(failed.value, JobCanceled)
    final = failed.value.job
    assert (final.id, final.status) == (job.id, "failed") and final.error
    assert failed.value.error == final.error and final.error in str(failed.value)
    assert str(failed.value).startswith(f"job {job.id} failed at step 0/24: ")

    def watch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "jobs", "watch", job.id, *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    as_json = watch("--json")  # the path that waits with wait()
    assert as_json.returncode == 1, as_json.stderr
    assert json.loads(as_json.stdout)["status"] == "failed"
    assert as_json.stderr == f"error: {failed.value}\n"
    plain = watch()
    assert plain.returncode == 1 and f"{job.id} failed at step 0/24" in plain.stdout
    assert f"error: {final.error}" in plain.stderr


def test_errors_are_exceptions_with_the_problem_fields(server, client, trained, config):
    with pytest.raises(Invalid) as err:
        client.samples(trained.id, n=1000)
    assert (err.value.status, err.value.field) == (422, "n")
    assert "256" in err.value.detail and err.value.errors

    with pytest.raises(Invalid) as err:
        client.create_job(config(image_size=100))
    assert err.value.field == "config.image_size"

    with pytest.raises(Invalid) as err:
        client.samples(trained.id, label=1)  # an unconditional model
    assert err.value.field == "label"

    with pytest.raises(NotFound) as nf:
        client.get_job("job_0000000000000000")
    assert nf.value.status == 404 and "not found" in nf.value.detail

    with pytest.raises(Conflict) as conflict:
        client.resume_job(trained.id)  # succeeded: nothing to resume
    assert conflict.value.status == 409

    with pytest.raises(ValueError):
        client.get_job("")  # would be GET /v1/jobs/, the list

    with Client(server.url, "gf_key_wrong_wrong") as bad, pytest.raises(Unauthorized) as unauth:
        bad.list_datasets()
    assert unauth.value.status == 401 and isinstance(unauth.value, ApiError)

    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "x") as nowhere, pytest.raises(ConnectionFailed) as down:
        nowhere.get_job("job_x")
    assert isinstance(down.value, ConnectionError) and url in str(down.value)
    assert "connection refused" in str(down.value)


def test_the_key_comes_from_the_environment_and_is_never_shown(server, key, monkeypatch):
    monkeypatch.setenv("GANFORGE_URL", server.url + "/")
    monkeypatch.setenv("GANFORGE_KEY", key)
    with Client() as c:
        assert c.url == server.url and key not in repr(c)
        assert c.list_datasets()


def test_the_client_needs_neither_torch_nor_the_server_code(server, key, trained):
    blocked = "torch", "torchvision", "gan_core", "sqlalchemy", "fastapi", "celery"
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "from ganforge_client import Client\n"
        f"with Client({server.url!r}, {key!r}) as c:\n"
        f"    print(c.samples({trained.id!r}, n=1, image=True).size)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(16, 16)"  # one image: no grid padding
