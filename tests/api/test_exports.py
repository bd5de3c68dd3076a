"""generator.onnx and generator.pt through the API: they run, match torch, and are made once."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from gan_core.checkpoint import load_generator
from gan_core.sampling import generate
from tests.api.conftest import TINY


def _checkpoint_dir(settings, client, job_id):
    ckpt = client.get(f"/v1/jobs/{job_id}/checkpoints/latest").json()
    return (
        ckpt,
        settings.resolved_store_dir / "jobs" / job_id / "checkpoints" / f"step-{ckpt['step']:08d}",
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_onnx_and_torchscript_of_a_checkpoint_match_torch(client, settings, run_job):
    for conditional in (False, True):
        job_id = client.post(
            "/v1/jobs", json={"config": {**TINY, "conditional": conditional}}
        ).json()["id"]
        assert run_job(job_id) == "succeeded"
        ckpt, path = _checkpoint_dir(settings, client, job_id)
        url = f"/v1/jobs/{job_id}/checkpoints/{ckpt['id']}"
        r = client.get(f"{url}/generator.onnx?ema=true")
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        assert r.headers["content-disposition"].endswith('-ema-generator.onnx"')
        G = load_generator(path, ema=True)
        for batch in (3, 7):  # dynamic batch
            z = torch.randn(batch, G.latent_dim, generator=torch.Generator().manual_seed(batch))
            labels = torch.arange(batch) % 5 if conditional else None
            want = generate(G, z, labels).numpy()
            feeds = {"z": z.numpy()} | ({"labels": labels.numpy()} if conditional else {})
            got = ort.InferenceSession(r.content).run(None, feeds)[0]
            assert np.abs(got - want).max() < 1e-4
            script = torch.jit.load(io.BytesIO(client.get(f"{url}/generator.pt?ema=true").content))
            traced = script(z, labels) if conditional else script(z)
            assert (traced - torch.from_numpy(want)).abs().max() < 1e-4
        again = client.get(
            f"{url}/generator.onnx?ema=true", headers={"If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304


def test_an_export_is_made_once_and_kept_beside_the_checkpoints(client, settings, trained_job):
    job_id, _ = trained_job
    first = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/generator.onnx?ema=false")
    exports = settings.resolved_store_dir / "jobs" / job_id / "exports"
    (made,) = exports.iterdir()
    assert made.name.endswith("-raw-generator.onnx")
    stamp = made.stat().st_mtime_ns
    second = client.get(f"/v1/jobs/{job_id}/checkpoints/latest/generator.onnx?ema=false")
    assert second.content == first.content and made.stat().st_mtime_ns == stamp
    assert second.headers["cache-control"] == "no-cache"  # 'latest' moves
    # the checkpoint directories still hold exactly their three files
    for ckpt in (settings.resolved_store_dir / "jobs" / job_id / "checkpoints").iterdir():
        assert sorted(p.name for p in ckpt.iterdir()) == [
            "generator.safetensors",
            "meta.json",
            "train_state.safetensors",
        ]
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not exports.exists()
