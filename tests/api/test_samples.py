"""Checkpoints and PNG samples over HTTP."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from tests.api.conftest import TINY


def _png(r):
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def test_samples_png_has_expected_size_and_is_deterministic(client, settings, trained_job):
    job_id, _ = trained_job
    url = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=16&seed=7&nrow=4"
    a = client.get(url)
    img = _png(a)
    side = TINY["image_size"] + 2
    assert img.size == (4 * side + 2, 4 * side + 2)
    assert img.mode == "L"  # shapes are grayscale
    # A second server with empty caches renders the same request afresh: the same bytes.
    # (The same server would answer from its PNG cache, which proves nothing.)
    with TestClient(create_app(settings), headers=dict(client.headers)) as fresh:
        b = fresh.get(url)
        assert fresh.app.state.services.sampling.sampler.renders >= 1  # rendered, not cached
    assert b.status_code == 200 and b.headers["content-type"] == "image/png"
    assert a.content == b.content
    assert a.headers["etag"] == b.headers["etag"]
    other = client.get(url.replace("seed=7", "seed=8"))
    assert other.content != a.content and other.headers["etag"] != a.headers["etag"]
    raw = client.get(url + "&ema=false")
    assert raw.content != a.content  # the EMA generator is a different model


def test_fixed_checkpoint_is_immutable_latest_is_not(client, trained_job):
    job_id, _ = trained_job
    ckpts = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    fixed = client.get(f"/v1/jobs/{job_id}/checkpoints/{ckpts[-1]['id']}/samples.png?n=4")
    assert "immutable" in fixed.headers["cache-control"]
    latest = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4")
    assert latest.headers["cache-control"] == "no-cache"
    assert latest.headers["x-checkpoint-id"] == ckpts[0]["id"]
    assert fixed.content != latest.content  # an earlier step vs the last


def test_if_none_match_gives_304_without_rendering(client, trained_job):
    job_id, _ = trained_job
    url = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=8"
    first = client.get(url)
    sampler = client.app.state.services.sampling.sampler
    loads = sampler.generators.loads
    r = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 304 and r.content == b""
    assert sampler.generators.loads == loads


def test_generator_loaded_once_across_requests(client, trained_job):
    job_id, _ = trained_job
    sampler = client.app.state.services.sampling.sampler
    for seed in range(5):
        client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&seed={seed}")
    assert sampler.generators.loads == 1


def test_interpolation_png(client, trained_job):
    job_id, _ = trained_job
    r = client.get(
        f"/v1/jobs/{job_id}/checkpoints/latest/interpolation.png?from_seed=1&to_seed=2&steps=5"
    )
    img = _png(r)
    side = TINY["image_size"] + 2
    assert img.size == (5 * side + 2, side + 2)


def test_sample_limits_are_422_naming_the_limit(client, trained_job):
    job_id, _ = trained_job
    base = f"/v1/jobs/{job_id}/checkpoints/latest"
    for url, field in [
        (f"{base}/samples.png?n=0", "n"),
        (f"{base}/samples.png?n=100000", "n"),
        (f"{base}/samples.png?nrow=0", "nrow"),
        (f"{base}/samples.png?seed=-1", "seed"),
        (f"{base}/samples.png?truncation=0", "truncation"),
        (f"{base}/interpolation.png?steps=1", "steps"),
        (f"{base}/interpolation.png?steps=1000", "steps"),
    ]:
        r = client.get(url)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["field"] == field, (url, r.json())
        assert r.json()["errors"][0].get("limit") or "must" in r.json()["detail"]
    r = client.get(f"{base}/samples.png?n=abc")
    assert r.status_code == 422 and r.json()["field"] == "n"


def test_checkpoint_detail_and_download(client, trained_job):
    job_id, _ = trained_job
    ckpt = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"][0]
    detail = client.get(f"/v1/jobs/{job_id}/checkpoints/{ckpt['id']}").json()
    assert detail["step"] == TINY["steps"] and detail["size_bytes"] > 0
    assert len(detail["files"]["generator.safetensors"]["sha256"]) == 64
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/{ckpt['id']}/download")
    assert r.headers["content-type"] == "application/zip"
    names = sorted(n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist())
    assert names == ["generator.safetensors", "meta.json", "train_state.safetensors"]


def test_no_checkpoint_yet_is_404(client):
    job_id = client.post("/v1/jobs", json={"config": TINY}).json()["id"]
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png")
    assert r.status_code == 404 and "no checkpoint" in r.json()["detail"]


def test_tampered_checkpoint_is_refused_and_server_stays_up(client, settings, trained_job):
    job_id, _ = trained_job
    ckpt_dir = sorted((settings.resolved_store_dir / "jobs" / job_id / "checkpoints").iterdir())[-1]
    weights = ckpt_dir / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&seed=123")
    assert r.status_code == 422 and "sha256" in r.json()["detail"]
    (ckpt_dir / "evil.pkl").write_bytes(b"\x80\x04N.")
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&seed=124")
    assert r.status_code == 422 and "evil.pkl" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_conditional_labels(client, run_job):
    cfg = {**TINY, "conditional": True}
    job_id = client.post("/v1/jobs", json={"config": cfg}).json()["id"]
    assert run_job(job_id) == "succeeded"
    base = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4"
    a, b = client.get(base + "&label=0"), client.get(base + "&label=1")
    assert _png(a) and a.content != b.content
    # The worker stored the config as it resolved it from the data, so the API knows the
    # model's classes without loading it.
    config = client.get(f"/v1/jobs/{job_id}").json()["config"]
    assert config["num_classes"] == 5 and config["channels"] == 1
    r = client.get(base + "&label=5")  # shapes has 5 classes: 0..4
    assert r.status_code == 422 and r.json()["field"] == "label"
    assert "< 5 (the model's classes)" in r.json()["detail"]


def test_a_label_for_an_unconditional_model_is_refused(client, trained_job):
    job_id, _ = trained_job
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&label=1")
    assert r.status_code == 422 and r.json()["field"] == "label"
    assert "unconditional" in r.json()["detail"]
