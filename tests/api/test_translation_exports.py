"""A translator's generator.onnx and generator.pt over HTTP, on real translation jobs trained in
this process: the files give POST …/translate's pixels for the same images (onnxruntime with
no torch, and TorchScript), at any batch size, for each direction of an unpaired model; they
are made once and kept, ETagged like a noise generator's; a direction a model does not have is
a problem+json 422 naming direction.

Tolerance: the exported graph computes the same float function as the server's translator, but
onnxruntime sums the convolutions in another order than torch, so an output may differ from
torch's by ~1e-6. After ``(y + 1) * 127.5`` and rounding that can move a value that sits on a
.5 boundary by one grey level, and never by more: hence "within 1 grey level", with almost
every pixel equal (checked too, so a systematic one-level shift would fail)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from tests.api.conftest import TINY, make_key
from tests.api.test_translate import (
    PAIRED,
    SIZE,
    UNPAIRED,
    _settings,
    _trained,
    domains_zip,
    noise_image,
    post_raw,
)
from tests.api.upload_helpers import assert_problem, upload

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
TS_LOAD = "ignore:`torch.jit.load` is deprecated:FutureWarning"
BATCH = 5


class World:
    """One server with a paired job, an unpaired one and a noise one (training is the slow
    part, so this module's tests share them)."""

    def __init__(self, settings, client: TestClient):
        self.settings, self.client = settings, client
        self.paired = _trained(client, settings, PAIRED)
        ds = upload(client, domains_zip(), filename="h2z.zip").json()
        self.unpaired = _trained(client, settings, {**UNPAIRED, "dataset": ds["id"]})
        self.noise = _trained(client, settings, TINY)

    def ckpt_id(self, job_id: str) -> str:
        return str(self.client.get(f"/v1/jobs/{job_id}/checkpoints/latest").json()["id"])

    def url(self, job_id: str, what: str, ref: str = "latest") -> str:
        return f"/v1/jobs/{job_id}/checkpoints/{ref}/{what}"

    def exports(self, job_id: str) -> Path:
        return self.settings.resolved_store_dir / "jobs" / job_id / "exports"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("translation-exports"))
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        yield World(settings, c)


def images(channels: int, n: int = BATCH, seed: int = 0) -> list[bytes]:
    """n PNGs at the model's side (so the server's centre-crop and resize leave them be)."""
    mode = "L" if channels == 1 else "RGB"
    return [noise_image((SIZE, SIZE), mode, seed + i) for i in range(n)]


def as_input(pngs: list[bytes]) -> np.ndarray:
    """The exported graph's input: float32 (n, C, S, S) in [-1, 1], as the server prepares it."""
    arrays = []
    for data in pngs:
        a = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(arrays) / np.float32(127.5) - np.float32(1)


def to_pixels(y: np.ndarray) -> np.ndarray:
    """The exported graph's output as uint8 pixels, as the server encodes its PNG."""
    return ((y + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def served(world: World, job_id: str, pngs: list[bytes], **params) -> np.ndarray:
    """POST …/translate's pixels for each image: uint8 (n, C, S, S)."""
    out = []
    for data in pngs:
        r = post_raw(world.client, world.url(job_id, "translate"), data, **params)
        assert r.status_code == 200, r.text
        a = np.asarray(Image.open(io.BytesIO(r.content)))
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(out)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} pixels off by more than one level"
    assert (diff == 0).mean() >= 0.99, f"only {(diff == 0).mean():.2%} of the pixels equal"


def onnx_meta(sess: ort.InferenceSession) -> dict:
    return {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


def download(world: World, url: str) -> bytes:
    r = world.client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    return r.content


# --------------------------------------------------------------------------- parity


def test_onnx_of_a_paired_translator_gives_translates_pixels(world):
    ckpt = world.ckpt_id(world.paired)
    r = world.client.get(world.url(world.paired, "generator.onnx", ckpt))
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"].endswith('-a2b-generator.onnx"')
    sess = ort.InferenceSession(r.content)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and inp.shape[1:] == [1, SIZE, SIZE]  # grey edges in
    assert out.name == "translated" and out.shape[1:] == [3, SIZE, SIZE]  # colour out
    meta = onnx_meta(sess)
    assert meta["format"] == "ganforge-translator-onnx/1"
    assert (meta["kind"], meta["direction"], meta["checkpoint_id"]) == ("paired", "a2b", ckpt)
    assert meta["checkpoint_step"] == PAIRED["steps"]
    pngs = images(1)
    want = served(world, world.paired, pngs)
    x = as_input(pngs)
    whole = to_pixels(sess.run(None, {"images": x})[0])  # one batch of 5
    assert_close(whole, want)
    for i in (0, 3):  # batches of 1 and 2: the same images' pixels (dynamic batch)
        assert_close(to_pixels(sess.run(None, {"images": x[i : i + 1]})[0]), want[i : i + 1])
    assert_close(to_pixels(sess.run(None, {"images": x[1:3]})[0]), want[1:3])
    # a translator is not a sampler: a pure function of its input, not of noise
    assert not np.array_equal(whole[0], whole[1])


@pytest.mark.filterwarnings(TS_LOAD)
def test_torchscript_of_a_paired_translator_gives_translates_pixels(world):
    data = download(world, world.url(world.paired, "generator.pt"))
    assert data[:2] == b"PK"  # a TorchScript archive
    extra = {"ganforge.json": ""}
    script = torch.jit.load(io.BytesIO(data), _extra_files=extra)
    meta = json.loads(extra["ganforge.json"])
    assert meta["format"] == "ganforge-translator-torchscript/1" and meta["direction"] == "a2b"
    pngs = images(1, seed=20)
    want = served(world, world.paired, pngs)
    x = torch.from_numpy(as_input(pngs))
    with torch.no_grad():
        for batch in (BATCH, 1):
            assert_close(to_pixels(script(x[:batch]).numpy()), want[:batch])


@pytest.mark.filterwarnings(TS_LOAD)
def test_unpaired_exports_each_direction(world):
    made = {}
    for direction, (c_in, c_out) in {"a2b": (1, 3), "b2a": (3, 1)}.items():
        url = world.url(world.unpaired, "generator.onnx") + f"?direction={direction}"
        made[direction] = data = download(world, url)
        sess = ort.InferenceSession(data)
        assert sess.get_inputs()[0].shape[1:] == [c_in, SIZE, SIZE]
        assert sess.get_outputs()[0].shape[1:] == [c_out, SIZE, SIZE]
        assert (onnx_meta(sess)["kind"], onnx_meta(sess)["direction"]) == ("unpaired", direction)
        pngs = images(c_in, n=3, seed=40)
        want = served(world, world.unpaired, pngs, direction=direction)
        x = as_input(pngs)
        assert_close(to_pixels(sess.run(None, {"images": x})[0]), want)
        pt = world.url(world.unpaired, "generator.pt") + f"?direction={direction}"
        script = torch.jit.load(io.BytesIO(download(world, pt)))
        with torch.no_grad():
            assert_close(to_pixels(script(torch.from_numpy(x)).numpy()), want)
    assert made["a2b"] != made["b2a"]
    # one file per direction and format (ema=auto: the averaged weights while unscored)
    ckpt = world.ckpt_id(world.unpaired)
    assert sorted(p.name for p in world.exports(world.unpaired).iterdir()) == [
        f"{ckpt}-ema-{d}-generator.{e}" for d in ("a2b", "b2a") for e in ("onnx", "pt")
    ]


# --------------------------------------------------------------------------- caching


def test_made_once_kept_and_etagged_like_a_noise_generators(world):
    c, job = world.client, world.paired
    url = world.url(job, "generator.onnx")
    first = c.get(url)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"  # latest
    files = sorted(world.exports(job).glob("*-a2b-generator.onnx"))
    assert len(files) == 1, files
    stamp = files[0].stat().st_mtime_ns
    named = c.get(url, params={"direction": "a2b"})  # a2b is the default: the same file
    assert named.content == first.content and named.headers["etag"] == first.headers["etag"]
    assert files[0].stat().st_mtime_ns == stamp  # not made again
    r = c.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == first.headers["etag"]
    # a fixed id and a fixed choice of weights name immutable bytes
    fixed = c.get(world.url(job, "generator.onnx", world.ckpt_id(job)), params={"ema": "true"})
    assert fixed.status_code == 200 and "immutable" in fixed.headers["cache-control"]
    # the other weights are another file with another tag
    raw = c.get(url, params={"ema": "false"})
    assert raw.status_code == 200 and raw.headers["etag"] != first.headers["etag"]
    assert raw.headers["content-disposition"].endswith('-raw-a2b-generator.onnx"')
    # a fresh server serves the kept file: same bytes and tag, nothing exported again
    with TestClient(create_app(world.settings), headers=dict(c.headers)) as fresh:
        again = fresh.get(url)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert files[0].stat().st_mtime_ns == stamp
    # the checkpoint directories still hold exactly their files
    for ckpt in (world.settings.resolved_store_dir / "jobs" / job / "checkpoints").iterdir():
        assert not any(p.suffix in (".onnx", ".pt") for p in ckpt.iterdir())


# --------------------------------------------------------------------------- refusals


def test_a_direction_the_model_lacks_is_a_422_naming_direction(world):
    c = world.client
    for what in ("generator.onnx", "generator.pt"):
        paired = c.get(world.url(world.paired, what), params={"direction": "b2a"})
        assert_problem(paired, 422, "direction", "paired", "a2b")
        noise = c.get(world.url(world.noise, what), params={"direction": "a2b"})
        assert_problem(noise, 422, "direction", "noise-to-image", "leave direction out")
        other = c.get(world.url(world.unpaired, what), params={"direction": "sideways"})
        assert_problem(other, 422, "direction")
        gone = c.get(world.url(world.paired, what, "ck_nope"))
        assert gone.status_code == 404
        assert gone.headers["content-type"].startswith("application/problem+json")
    # refused before anything was exported
    assert not world.exports(world.noise).exists()
    assert not any("b2a" in p.name for p in world.exports(world.paired).glob("*"))
    # another owner's translator is not found
    bob = make_key(world.settings, "bob")
    r = c.get(world.url(world.paired, "generator.onnx"), headers={"Authorization": f"Bearer {bob}"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem")


# --------------------------------------------------------------------------- the docs


def test_the_docs_translator_snippet_runs_without_torch(world, tmp_path):
    """docs/api.md's five lines, as written, on generator.onnx from this server, in a Python
    that cannot import torch: out.png is what POST …/translate gives for the same image (a
    non-square one, which both centre-crop and resize)."""
    marker = "translates a PNG in five lines"
    assert DOCS.count(marker) == 1
    block = DOCS.split(marker, 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 5
    (tmp_path / "translator.onnx").write_bytes(
        download(world, world.url(world.paired, "generator.onnx"))
    )
    edges = noise_image((48, 36), "L", seed=7)  # wider than tall: cropped, then resized
    (tmp_path / "in.png").write_bytes(edges)
    no_torch = "import sys; sys.modules['torch'] = None; sys.modules['gan_core'] = None\n"
    run = subprocess.run(
        [sys.executable, "-c", no_torch + block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = np.asarray(Image.open(tmp_path / "out.png"))
    want = served(world, world.paired, [edges])[0].transpose(1, 2, 0)
    assert got.shape == want.shape == (SIZE, SIZE, 3)
    assert_close(got, want)
