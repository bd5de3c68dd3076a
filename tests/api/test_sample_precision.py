"""The precision samples are rendered in: chosen by GANFORGE_SAMPLE_PRECISION, part of the ETag,
the same bytes for the same request in a mode, and within tolerance of the plain fp32 path."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.core.settings import Settings
from gan_core.checkpoint import latest_checkpoint, load_generator
from gan_core.inference import resolve_mode
from gan_core.sampling import png_grid, sample


def _pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)), dtype=np.int16)


def test_precision_setting_picks_the_mode_and_keys_the_etag(client, settings, trained_job):
    job_id, _ = trained_job
    url = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=16&seed=5&nrow=4"
    default = client.get(url)
    assert client.app.state.services.sampling.sampler.mode == resolve_mode("auto")
    renders = {}
    for mode in ("fp32", "bf16"):
        env = Settings(**{**settings.model_dump(), "sample_precision": mode})
        with TestClient(create_app(env), headers=dict(client.headers)) as c:
            assert c.app.state.services.sampling.sampler.mode == mode
            first, again = c.get(url), c.get(url + "&nrow=4")  # a new URL, the same request
            assert first.status_code == again.status_code == 200, first.text
        with TestClient(create_app(env), headers=dict(client.headers)) as fresh:
            repeat = fresh.get(url)  # empty caches: rendered again
        assert repeat.content == first.content and repeat.headers["etag"] == first.headers["etag"]
        renders[mode] = first
    assert renders["fp32"].headers["etag"] != renders["bf16"].headers["etag"]
    assert default.headers["etag"] == renders[resolve_mode("auto")].headers["etag"]
    # A client holding the fp32 ETag does not get a 304 for the bf16 rendering.
    env = Settings(**{**settings.model_dump(), "sample_precision": "bf16"})
    with TestClient(create_app(env), headers=dict(client.headers)) as c:
        r = c.get(url, headers={"If-None-Match": renders["fp32"].headers["etag"]})
        assert r.status_code == 200

    # fp32 is the plain eval-mode forward up to float rounding; bf16 within 1/255 on average.
    run_dir = client.app.state.services.store.run_dir(job_id)
    G = load_generator(latest_checkpoint(run_dir), ema=True)
    plain = _pixels(png_grid(sample(G, 16, seed=5), nrow=4))
    fp32, bf16 = _pixels(renders["fp32"].content), _pixels(renders["bf16"].content)
    assert np.abs(fp32 - plain).max() <= 1 and np.abs(fp32 - plain).mean() < 0.01
    assert np.abs(bf16 - plain).mean() <= 1.0


def test_bad_precision_setting_names_it(tmp_path):
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="sample_precision"):
        Settings(data_dir=tmp_path, sample_precision="fp16")
