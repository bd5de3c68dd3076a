"""Scores per checkpoint, `best`, `ema=auto`, the metrics history and the pictures, through the
API with jobs run as the worker runs them (real scoring: an extractor trained on the data)."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence

from app.api.main import create_app
from app.core.settings import Settings
from tests.api.conftest import make_key
from tests.tiny import tiny

RUN = tiny(steps=48, checkpoint_every=12, keep_checkpoints=2)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One server with scoring on; two jobs on the same data (another net), run to the end."""
    from worker.runner import run_job

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("scores"),
        progress_interval=0.05,
        max_jobs_per_owner=20,
        score_samples=128,
        history_points=10,
    )
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        jobs = []
        for width in (8, 12):  # the same seed: `shapes` is generated from it, so the same data
            job_id = client.post("/v1/jobs", json={"config": {**RUN, "g_width": width}}).json()[
                "id"
            ]
            assert run_job(job_id, settings=settings) == "succeeded"
            jobs.append(job_id)
        yield client, settings, jobs


def test_every_checkpoint_is_scored_for_both_generators(scored):
    client, _, (job_id, _) = scored
    items = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert [c["step"] for c in items][:2] == [48, 36]  # newest first
    for c in items:
        assert c["score_status"] == "scored", c
        s = c["scores"]
        assert s["num_samples"] == 128 and s["extractor"] == "classifier"  # shapes has labels
        for name in ("ema", "raw"):
            g = s[name]
            assert g["fd"] >= 0 and g["kid_std"] >= 0 and 0 <= g["precision"] <= 1
            assert 0 <= g["recall"] <= 1 and g["num_classes"] == 5
        assert s["preferred"] in ("ema", "raw")
        assert s["fd"] == s[s["preferred"]]["fd"] == min(s["ema"]["fd"], s["raw"]["fd"])


def test_best_is_the_lowest_fd_and_survives_pruning(scored):
    client, settings, (job_id, _) = scored
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()
    scored_rows = [c for c in metrics["checkpoints"] if c["scores"]]
    assert [c["step"] for c in metrics["checkpoints"]] == [12, 24, 36, 48]  # the whole history
    # lowest FD wins; on a tie the newer one
    want = min(scored_rows, key=lambda c: (c["scores"]["fd"], -c["step"]))
    best = client.get(f"/v1/jobs/{job_id}/checkpoints/best").json()
    assert best["id"] == want["id"] == metrics["best_checkpoint_id"] and best["best"] is True
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["best_checkpoint_id"] == best["id"] and job["best_fd"] == want["scores"]["fd"]
    # pruning kept the newest keep_checkpoints=2 plus the best, files and all
    stored = {c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]}
    assert stored == {36, 48} | {best["step"]}
    on_disk = {
        int(p.name.split("-")[1])
        for p in (settings.resolved_store_dir / "jobs" / job_id / "checkpoints").iterdir()
    }
    assert on_disk == stored
    pruned = [c for c in metrics["checkpoints"] if not c["stored"]]
    assert all(c["step"] not in stored for c in pruned)
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/best/samples.png?n=4")
    assert r.status_code == 200 and r.headers["x-checkpoint-id"] == best["id"]
    assert r.headers["cache-control"] == "no-cache"  # best moves as training goes on


def test_ema_auto_samples_the_generator_that_scored_better(scored):
    client, _, (job_id, _) = scored
    for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]:
        base = f"/v1/jobs/{job_id}/checkpoints/{c['id']}/samples.png?n=4&seed=3"
        auto, ema, raw = (client.get(f"{base}&ema={e}") for e in ("auto", "true", "false"))
        chosen = ema if c["scores"]["preferred"] == "ema" else raw
        assert auto.content == chosen.content and auto.headers["etag"] == chosen.headers["etag"]
        assert "immutable" in auto.headers["cache-control"]  # scored: auto is fixed now


def test_the_extractor_is_trained_once_per_dataset_and_reused(scored):
    _, settings, _ = scored
    scorers = sorted((settings.resolved_store_dir / "scorers").iterdir())
    assert len(scorers) == 1  # two jobs, one dataset (by content): one extractor
    assert sorted(p.name for p in scorers[0].iterdir()) == [
        "extractor.safetensors",
        "reference.safetensors",
    ]
    assert "-classifier-v" in scorers[0].name


def test_metrics_json_and_csv(scored):
    client, settings, (job_id, _) = scored
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()
    train = metrics["train"]
    assert 1 <= len(train) <= 2 * settings.history_points  # bounded however long the run
    assert train[-1]["step"] == 48 and all(
        a["step"] < b["step"] for a, b in zip(train, train[1:], strict=False)
    )
    assert all(p["d_loss"] is not None and p["images_per_sec"] > 0 for p in train)
    r = client.get(f"/v1/jobs/{job_id}/metrics", headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["step"] for x in rows if x["kind"] == "checkpoint"] == ["12", "24", "36", "48"]
    assert len([x for x in rows if x["kind"] == "train"]) == len(train)
    best = next(x for x in rows if x["best"] == "True")
    assert best["checkpoint_id"] == metrics["best_checkpoint_id"] and float(best["fd"]) >= 0


def test_pictures_are_deterministic_across_servers_and_cacheable(scored):
    client, settings, (job_id, _) = scored
    urls = [
        f"/v1/jobs/{job_id}/losses.png?width=640&height=320",
        f"/v1/jobs/{job_id}/timeline.png?n=4&seed=1",
        f"/v1/jobs/{job_id}/timeline.gif?n=4&seed=1&frame_ms=200",
    ]
    first = [client.get(u) for u in urls]
    with TestClient(create_app(settings), headers=dict(client.headers)) as fresh:
        again = [fresh.get(u) for u in urls]  # an empty cache: drawn anew
        for a, b in zip(first, again, strict=True):
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.content == b.content and a.headers["etag"] == b.headers["etag"]
            r = fresh.get(urls[first.index(a)], headers={"If-None-Match": a.headers["etag"]})
            assert r.status_code == 304
    chart = Image.open(io.BytesIO(first[0].content))
    assert chart.size == (640, 320)
    stored = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    grid = Image.open(io.BytesIO(first[1].content))
    assert grid.height >= len(stored) * 16  # a row per stored checkpoint
    frames = list(ImageSequence.Iterator(Image.open(io.BytesIO(first[2].content))))
    assert len(frames) == len(stored)
    other = client.get(urls[1].replace("seed=1", "seed=2"))
    assert hashlib.sha256(other.content).digest() != hashlib.sha256(first[1].content).digest()


def test_picture_parameters_out_of_bounds_are_422_naming_the_field(scored):
    client, _, (job_id, _) = scored
    for url, field in [
        ("losses.png?width=5", "width"),
        ("losses.png?height=99999", "height"),
        ("timeline.png?n=0", "n"),
        ("timeline.png?rows=65", "rows"),
        ("timeline.gif?frame_ms=1", "frame_ms"),
        ("timeline.png?ema=maybe", "ema"),
    ]:
        r = client.get(f"/v1/jobs/{job_id}/{url}")
        assert r.status_code == 422 and r.json()["field"] == field, (url, r.text)


def test_sse_resumes_after_a_dropped_connection_without_loss_or_repeat(scored):
    """Read some events, 'drop' the connection, reconnect with Last-Event-ID: the events after
    it, each once; together they are the same as one uninterrupted read."""
    client, _, (_, job_id) = scored

    def read(headers=None) -> list[tuple[int, str, dict]]:
        events, current = [], {}
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers or {}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("id: "):
                    current["id"] = int(line[4:])
                elif line.startswith("event: "):
                    current["event"] = line[7:]
                elif line.startswith("data: "):
                    current["data"] = json.loads(line[6:])
                elif line == "" and current:
                    events.append((current.get("id"), current["event"], current["data"]))
                    current = {}
        return events

    everything = read({"Last-Event-ID": "0"})  # from the start of the run
    kinds = [e[1] for e in everything]
    # as docs/api.md says: every checkpoint since, then the job's current state; the states
    # in between (queued, running, each progress report) are superseded, not replayed
    assert kinds == ["checkpoint"] * 4 + ["job"]
    assert everything[-1][2]["status"] == "succeeded"
    ids = [e[0] for e in everything]
    assert ids == sorted(set(ids))  # increasing, no repeats
    checkpoint = next(e for e in everything if e[1] == "checkpoint")
    assert checkpoint[2]["scores"]["fd"] >= 0  # checkpoint events carry the scores
    cut = ids[len(ids) // 2]
    rest = read({"Last-Event-ID": str(cut)})
    assert [e[0] for e in rest] == [i for i in ids if i > cut]  # nothing lost, nothing again
    assert read({"Last-Event-ID": str(ids[-1])}) == []  # all seen: the stream just ends
    assert [e[1] for e in read()] == ["job"]  # a new watcher: the current state


def test_standard_inception_fid_when_the_operator_supplies_the_weights(tmp_path, monkeypatch):
    """GANFORGE_INCEPTION_WEIGHTS points at a local copy of the FID Inception-v3 weights (here
    a file of random weights in that format): checkpoints also get FID/KID in its 2048-d space,
    and nothing ever tries the network."""
    import socket

    import torch.hub

    from tests.inception_weights import write_inception_weights
    from worker.runner import run_job

    def refuse(*args, **kwargs):
        raise AssertionError("tried the network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    weights = write_inception_weights(tmp_path / "pt_inception-2015-12-05.pth")
    settings = Settings(
        data_dir=tmp_path / "data",
        progress_interval=0.05,
        score_samples=64,
        inception_weights=weights,
        inception_samples=8,
        inception_reference_images=8,
    )
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        job_id = client.post(
            "/v1/jobs", json={"config": tiny(steps=12, checkpoint_every=12)}
        ).json()["id"]
        assert run_job(job_id, settings=settings) == "succeeded"
        (ckpt,) = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    inception = ckpt["scores"]["inception"]
    assert inception["num_samples"] == 8
    for name in ("ema", "raw"):
        assert inception[name]["fid"] > 0 and inception[name]["kid_std"] >= 0
    assert (settings.resolved_store_dir / "scorers").is_dir()
    assert any(
        p.name.endswith("-inception") for p in (settings.resolved_store_dir / "scorers").iterdir()
    )
