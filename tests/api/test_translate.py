"""Translating over HTTP: POST …/checkpoints/{ref}/translate with an image (raw body or the
multipart field 'image') and GET …/checkpoints/{ref}/translations.png, on real jobs trained in
this process: the pixels are the translator's, the same input gives the same bytes and ETag,
and every bad input is a problem+json 4xx naming what broke."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.core.artifacts.selection import get_store
from app.core.settings import Settings
from gan_core.data.pairs import load_pairs
from gan_core.translation.inference import load_translator, prepare_image, translate
from tests.api.conftest import TINY, make_key
from tests.api.test_pair_uploads import pairs_zip
from tests.api.upload_helpers import assert_problem, make_zip, png, upload

SIZE = 32  # the U-Net's smallest side
PAIRED = {
    "kind": "paired",
    "dataset": "shapes-edges",
    "image_size": SIZE,
    "g_width": 8,
    "d_width": 8,
    "batch_size": 2,
    "steps": 2,
    "checkpoint_every": 2,
    "device": "cpu",
}
UNPAIRED = {**PAIRED, "kind": "unpaired", "pool_size": 2}
CELL = SIZE + 2  # an image and the gap beside it, in a grid


def noise_image(size=(40, 30), mode="L", seed=0, fmt="PNG") -> bytes:
    """A random image (not square: the model centre-crops it)."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format=fmt)
    return buf.getvalue()


def domains_zip() -> bytes:
    """Two unpaired domains: grey trainA/ (5 images), colour trainB/ (6), no name in common."""
    members = {f"h2z/trainA/h{i}.png": noise_image((20, 20), "L", i) for i in range(5)}
    members |= {f"h2z/trainB/z{i}.png": noise_image((24, 18), "RGB", 10 + i) for i in range(6)}
    return make_zip(members)


def _settings(root, **overrides) -> Settings:
    return Settings(
        data_dir=root, progress_interval=0.05, max_jobs_per_owner=20, score_samples=0, **overrides
    )


def _trained(client, settings, config) -> str:
    from worker.runner import run_job

    r = client.post("/v1/jobs", json={"name": "t", "config": config})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert run_job(job_id, settings=settings) == "succeeded"
    return job_id


class Served:
    """One server and its jobs, shared by this module's tests (training is the slow part)."""

    def __init__(self, settings: Settings, client: TestClient):
        self.settings, self.client = settings, client
        self.paired = _trained(client, settings, PAIRED)
        ds = upload(client, domains_zip(), filename="h2z.zip").json()
        assert ds["kind"] == "unpaired", ds
        self.unpaired = _trained(client, settings, {**UNPAIRED, "dataset": ds["id"]})
        pairs = upload(client, pairs_zip(n=8), filename="edges.zip").json()  # 2 held out
        self.uploaded_pairs = _trained(client, settings, {**PAIRED, "dataset": pairs["id"]})
        self.noise = _trained(client, settings, TINY)

    def url(self, job_id: str, what: str = "translate", ref: str = "latest") -> str:
        return f"/v1/jobs/{job_id}/checkpoints/{ref}/{what}"

    def ckpt_dir(self, job_id: str):
        from app.core.artifacts import checkpoints
        from app.core.db import session_scope

        with session_scope(self.settings.resolved_database_url) as s:
            row = checkpoints.get_checkpoint(s, job_id=job_id, ref="latest")
            return checkpoints.checkpoint_path(get_store(self.settings.resolved_store_dir), row)

    @property
    def translations(self):
        return self.client.app.state.services.translations


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    # The per-key request rate (20/s, bursts of 40) would turn a timing-dependent share of
    # this module's quick requests into 429s: off here (test_byte_cap_and_pricing tests the
    # limits on a server of its own).
    settings = _settings(tmp_path_factory.mktemp("translate"), sample_rate=0)
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        yield Served(settings, c)


def post_raw(client, url, data: bytes, ctype="image/png", **params):
    return client.post(url, content=data, headers={"Content-Type": ctype}, params=params)


def post_form(client, url, data: bytes, field="image", **params):
    return client.post(url, files={field: ("x.png", data, "image/png")}, params=params)


def as_image(r) -> Image.Image:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def expected(served, job_id, data: bytes, direction="a2b") -> np.ndarray:
    """What gan_core itself makes of the image: the translator run directly."""
    model = load_translator(served.ckpt_dir(job_id), direction)
    with Image.open(io.BytesIO(data)) as im:
        x = prepare_image(im.convert("L" if im.mode == "L" else "RGB"), SIZE, model.in_channels)
    out = translate(model, x[None])[0]
    return (
        out.permute(1, 2, 0).numpy().squeeze(2)
        if out.shape[0] == 1
        else out.permute(1, 2, 0).numpy()
    )


# --------------------------------------------------------------------------- translate


def test_raw_body_and_multipart_give_the_translators_pixels(served):
    url, edges = served.url(served.paired), noise_image()
    raw = post_raw(served.client, url, edges)
    img = as_image(raw)
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"  # shapes-edges: grey edges → colour
    assert np.array_equal(np.asarray(img), expected(served, served.paired, edges))
    form = post_form(served.client, url, edges)
    assert form.content == raw.content and form.headers["etag"] == raw.headers["etag"]
    assert raw.headers["x-checkpoint-step"] == str(PAIRED["steps"])
    jpeg = post_raw(served.client, url, noise_image(fmt="JPEG"), ctype="image/jpeg")
    assert as_image(jpeg).size == (SIZE, SIZE) and jpeg.content != raw.content


def test_same_input_same_bytes_etag_and_412_on_a_matching_if_none_match(served):
    url, edges = served.url(served.paired), noise_image(seed=3)
    first = post_raw(served.client, url, edges)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"  # latest
    # A second server with empty caches translates afresh: the same bytes and ETag.
    with TestClient(create_app(served.settings), headers=dict(served.client.headers)) as fresh:
        again = post_raw(fresh, url, edges)
        assert fresh.app.state.services.translations.translated == 1
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    done = served.translations.translated
    cached = post_raw(served.client, url, edges)  # a repeat: from the PNG cache
    assert cached.content == first.content and served.translations.translated == done
    r = served.client.post(
        url,
        content=edges,
        headers={"Content-Type": "image/png", "If-None-Match": first.headers["etag"]},
    )
    # a POST whose If-None-Match names the ETag: the condition failed, 412 (RFC 9110 13.1.2)
    assert r.status_code == 412 and r.headers["etag"] == first.headers["etag"], r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert (problem["status"], problem["field"]) == (412, "If-None-Match")
    assert first.headers["etag"] in problem["detail"] and "already has" in problem["detail"]
    listed = served.client.post(
        url,
        content=edges,
        headers={"Content-Type": "image/png", "If-None-Match": f'"x", {first.headers["etag"]}'},
    )
    assert listed.status_code == 412, listed.text
    other_tag = served.client.post(
        url, content=edges, headers={"Content-Type": "image/png", "If-None-Match": '"x"'}
    )
    assert other_tag.status_code == 200 and other_tag.content == first.content
    loads = served.translations.translators.loads
    other = post_raw(served.client, url, noise_image(seed=4))
    assert other.headers["etag"] != first.headers["etag"] and other.content != first.content
    assert served.translations.translators.loads == loads  # the translator stays loaded
    raw_weights = post_raw(served.client, url, edges, ema="false")
    assert raw_weights.headers["etag"] != first.headers["etag"]  # another request, another tag


def test_a_fixed_checkpoint_id_is_immutable(served):
    ckpt = served.client.get(f"/v1/jobs/{served.paired}/checkpoints").json()["items"][0]
    r = post_raw(served.client, served.url(served.paired, ref=ckpt["id"]), noise_image(seed=5))
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert r.headers["x-checkpoint-id"] == ckpt["id"]


def test_unpaired_translates_both_ways(served):
    url = served.url(served.unpaired)
    grey, colour = noise_image((20, 20), "L", 1), noise_image((30, 20), "RGB", 2)
    a2b = as_image(post_raw(served.client, url, grey))
    assert a2b.size == (SIZE, SIZE) and a2b.mode == "RGB"
    assert np.array_equal(np.asarray(a2b), expected(served, served.unpaired, grey))
    b2a = as_image(post_raw(served.client, url, colour, direction="b2a"))
    assert b2a.size == (SIZE, SIZE) and b2a.mode == "L"
    assert np.array_equal(np.asarray(b2a), expected(served, served.unpaired, colour, "b2a"))
    # each direction takes its own domain's channels
    assert_problem(post_raw(served.client, url, grey, direction="b2a"), 422, "image", "grey")
    assert_problem(post_raw(served.client, url, colour), 422, "image", "colour")


def _truncated() -> bytes:
    data = noise_image((64, 64), "L", 9)
    return data[: len(data) // 2]


def _huge() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4097, 4097)).save(buf, format="PNG")  # 16.8 MP, a few kB of PNG
    return buf.getvalue()


@pytest.mark.parametrize(
    ("send", "status", "field", "words"),
    [
        (lambda c, u: post_raw(c, u, b"not an image at all"), 422, "image", ["not a readable"]),
        (lambda c, u: post_raw(c, u, _truncated()), 422, "image", ["cannot be read"]),
        (lambda c, u: post_raw(c, u, _huge()), 413, "image", ["4097x4097", "16777216"]),
        (lambda c, u: post_raw(c, u, b""), 422, "image", ["empty"]),
        (lambda c, u: post_raw(c, u, png(), ctype="text/plain"), 415, "image", ["text/plain"]),
        (
            lambda c, u: c.post(u, content=noise_image(), headers={"Content-Type": ""}),
            415,
            "image",
            ["content-type"],
        ),
        (lambda c, u: post_raw(c, u, noise_image(mode="RGB")), 422, "image", ["colour", "grey"]),
        (lambda c, u: post_form(c, u, noise_image(), field="file"), 422, "image", ["'image'"]),
        (
            lambda c, u: c.post(u, data={"image": "text"}, files={"other": ("o", b"x")}),
            422,
            "image",
            ["'image'"],
        ),
        (lambda c, u: post_raw(c, u, noise_image(), direction="b2a"), 422, "direction", ["a2b"]),
        (lambda c, u: post_raw(c, u, noise_image(), direction="up"), 422, "direction", []),
        (lambda c, u: post_raw(c, u, noise_image(), steps="3"), 422, "steps", ["unknown"]),
    ],
    ids=[
        "corrupt",
        "truncated",
        "too-many-pixels",
        "empty",
        "wrong-type",
        "no-type",
        "colour-to-grey-model",
        "wrong-field",
        "no-image-part",
        "b2a-on-paired",
        "bad-direction",
        "unknown-param",
    ],
)
def test_refusals_are_problem_json_naming_the_field(served, send, status, field, words):
    done = served.translations.translated
    assert_problem(send(served.client, served.url(served.paired)), status, field, *words)
    assert served.translations.translated == done  # nothing was translated


def test_not_a_translator_or_not_there(served):
    img = noise_image()
    r = post_raw(served.client, served.url(served.noise), img)
    assert r.status_code == 409 and "it samples" in r.json()["detail"], r.text
    assert_problem(
        post_raw(served.client, served.url(served.paired, ref="ckpt_nope"), img), 404, None
    )
    assert_problem(post_raw(served.client, served.url("job_nope"), img), 404, None)
    # the checkpoint is resolved before the body is read
    assert_problem(post_raw(served.client, served.url("job_nope"), b""), 404, None)
    r = post_raw(served.client, served.url(served.noise), b"", ctype="text/plain")
    assert r.status_code == 409
    best = post_raw(served.client, served.url(served.paired, ref="best"), img)  # scoring off
    assert_problem(best, 404, None, "scored")
    other = make_key(served.settings, "bob")
    r = served.client.post(
        served.url(served.paired),
        content=img,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {other}"},
    )
    assert_problem(r, 404, None, "not found")
    r = served.client.post(served.url(served.paired), content=img, headers={"Authorization": ""})
    assert r.status_code == 401


def test_byte_cap_and_pricing(tmp_path, served):
    """The upload byte cap (here 4 kB) and the render budget, charged per translated pixel."""
    settings = _settings(
        served.settings.data_dir,
        max_upload_bytes=4096,
        render_megapixels_per_second=0.001,
        render_burst_megapixels=0.002,  # 2 units of 1000 px: one 32x32 translation
    )
    key = make_key(settings, "carol")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        job = _trained(c, settings, PAIRED)
        url = served.url(job)
        big = noise_image((80, 80), "L", 1)
        assert len(big) > 4096
        for r in (post_raw(c, url, big), post_form(c, url, big)):
            assert_problem(r, 413, "image", "4096 bytes")
        declared = c.post(
            url, content=b"x" * 10, headers={"Content-Type": "image/png", "Content-Length": "5000"}
        )
        assert_problem(declared, 413, "image", "4096 bytes")  # refused before it is read
        assert post_raw(c, url, noise_image((20, 20), "L", 1)).status_code == 200
        r = post_raw(c, url, noise_image((20, 20), "L", 2))
        assert_problem(r, 429, None, "megapixels")
        assert int(r.headers["retry-after"]) >= 1
        # a repeat costs no render: answered from the cache
        assert post_raw(c, url, noise_image((20, 20), "L", 1)).status_code == 200


# --------------------------------------------------------------------------- translations.png


def _cell(img: Image.Image, row: int, col: int) -> np.ndarray:
    x, y = 2 + col * CELL, 2 + row * CELL
    return np.asarray(img)[y : y + SIZE, x : x + SIZE]


def test_translations_grid_of_held_out_pairs(served):
    url = served.url(served.paired, "translations.png") + "?n=3"
    r = served.client.get(url)
    img = as_image(r)
    assert img.mode == "RGB" and img.size == (3 * CELL + 2, 3 * CELL + 2)  # input|output|target
    data = load_pairs("shapes-edges", image_size=SIZE)
    inputs, targets = data.a.split()[1][:3], data.b.split()[1][:3]
    outputs = translate(load_translator(served.ckpt_dir(served.paired)), inputs)
    for i in range(3):
        grey = inputs[i, 0].numpy()
        assert np.array_equal(_cell(img, i, 0), np.stack([grey] * 3, axis=2))  # grey as grey
        assert np.array_equal(_cell(img, i, 1), outputs[i].permute(1, 2, 0).numpy())
        assert np.array_equal(_cell(img, i, 2), targets[i].permute(1, 2, 0).numpy())
    with TestClient(create_app(served.settings), headers=dict(served.client.headers)) as fresh:
        again = fresh.get(url)
        assert fresh.app.state.services.translations.translated == 3
    assert again.content == r.content and again.headers["etag"] == r.headers["etag"]
    done = served.translations.translated
    assert served.client.get(url).content == r.content and served.translations.translated == done
    r304 = served.client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert r304.status_code == 304 and r304.content == b""
    eight = as_image(served.client.get(served.url(served.paired, "translations.png")))
    assert eight.size == (3 * CELL + 2, 8 * CELL + 2)  # n=8 by default


def test_translations_grid_of_two_domains_and_uploaded_pairs(served):
    grid = served.url(served.unpaired, "translations.png")
    a2b = served.client.get(grid + "?n=8")
    # two columns, no target; 2 of each domain's images are held out, so 2 rows
    assert as_image(a2b).size == (2 * CELL + 2, 2 * CELL + 2) and as_image(a2b).mode == "RGB"
    b2a = served.client.get(grid + "?n=8&direction=b2a")
    assert as_image(b2a).size == as_image(a2b).size
    assert b2a.headers["etag"] != a2b.headers["etag"] and b2a.content != a2b.content
    r = served.client.get(served.url(served.uploaded_pairs, "translations.png") + "?n=5")
    assert as_image(r).size == (3 * CELL + 2, 2 * CELL + 2)
    # the held-out inputs are the upload's own: the first column shows grey edge maps
    first = _cell(as_image(r), 0, 0)
    assert (first[..., 0] == first[..., 1]).all() and (first[..., 1] == first[..., 2]).all()


def test_translations_grid_refusals(served):
    grid = served.url(served.paired, "translations.png")
    for query, status, field in [
        ("?n=0", 422, "n"),
        ("?n=65", 422, "n"),
        ("?direction=b2a", 422, "direction"),
        ("?seed=1", 422, "seed"),
    ]:
        assert_problem(served.client.get(grid + query), status, field)
    r = served.client.get(served.url(served.noise, "translations.png"))
    assert r.status_code == 409 and "it samples" in r.json()["detail"]
    assert_problem(served.client.get(served.url(served.paired, "translations.png", "x")), 404, None)


def test_a_grid_needs_the_jobs_dataset_but_translating_does_not(served):
    pairs = upload(served.client, pairs_zip(n=8), filename="gone.zip").json()
    job = _trained(served.client, served.settings, {**PAIRED, "dataset": pairs["id"]})
    assert served.client.delete(f"/v1/datasets/{pairs['id']}").status_code == 204
    r = served.client.get(served.url(job, "translations.png"))
    assert r.status_code == 409 and "deleted" in r.json()["detail"], r.text
    assert post_raw(served.client, served.url(job), noise_image()).status_code == 200
