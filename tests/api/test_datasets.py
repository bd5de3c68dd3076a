"""POST /v1/datasets: uploads of image zips and npz files, and every refusal (no 500s, no leftovers)."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import struct
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.core.settings import Settings
from tests.api.conftest import make_key
from tests.tiny import tiny

PROBLEM = "application/problem+json"
TINY = tiny(steps=4, checkpoint_every=2)


# --------------------------------------------------------------------------- helpers


def png(size=(16, 16), mode="RGB", color=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return buf.getvalue()


def make_npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def labelled_zip(per_class=8, root="pets/") -> bytes:
    rng = np.random.default_rng(0)
    members = {}
    for cls in ("cats", "dogs"):
        for i in range(per_class):
            img = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            members[f"{root}{cls}/{i:02d}.png"] = buf.getvalue()
    # What macOS and Windows add: must be skipped, not refused.
    members["__MACOSX/pets/cats/._00.png"] = b"\x00\x05\x16\x07junk"
    members[f"{root}.DS_Store"] = b"junk"
    members[f"{root}cats/Thumbs.db"] = b"junk"
    return make_zip(members)


def upload(client, data: bytes, filename="data.zip", name=None, ctype="application/zip"):
    fields = {"name": name} if name else None
    return client.post("/v1/datasets", files={"file": (filename, data, ctype)}, data=fields)


def upload_raw(client, data, filename=None, ctype="application/octet-stream", **params):
    if filename:
        params["filename"] = filename
    return client.post("/v1/datasets", content=data, params=params, headers={"Content-Type": ctype})


def assert_problem(r, status, field="file", *words):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body.get("field") == field, body
    for w in words:
        assert w.lower() in body["detail"].lower(), body["detail"]
    return body


def store_entries(settings: Settings, sub: str) -> list:
    d = settings.resolved_store_dir / sub
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def scratch_entries(settings: Settings) -> list:
    """What uploads left in the scratch areas of the store (each process has its own)."""
    tmp = settings.resolved_store_dir / "tmp"
    return (
        sorted(
            str(p.relative_to(tmp))
            for area in tmp.iterdir()
            if area.is_dir()
            for p in area.iterdir()
        )
        if tmp.exists()
        else []
    )


def assert_nothing_left(client, settings: Settings, uploads_before=0):
    assert scratch_entries(settings) == []
    assert len(store_entries(settings, "datasets")) == uploads_before
    items = [d for d in client.get("/v1/datasets").json()["items"] if not d["builtin"]]
    assert len(items) == uploads_before


@contextmanager
def app_with(tmp_path, **overrides):
    settings = Settings(data_dir=tmp_path, **{"score_samples": 0, **overrides})
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c, settings


# --------------------------------------------------------------------------- happy paths


def test_npz_without_labels(client, settings):
    x = np.random.default_rng(0).integers(0, 255, (10, 16, 16), dtype=np.uint8)
    r = upload(client, make_npz(x=x), filename="digits.npz", ctype="application/octet-stream")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert ds["id"].startswith("ds_") and ds["name"] == "digits"
    assert (ds["kind"], ds["num_images"], ds["channels"], ds["image_size"]) == ("npz", 10, 1, 16)
    assert ds["num_classes"] is None and ds["builtin"] is False
    path = settings.resolved_store_dir / "datasets" / ds["id"] / "data.npz"
    assert path.is_file() and ds["size_bytes"] == path.stat().st_size
    assert scratch_entries(settings) == []


def test_npz_with_labels_as_raw_body(client):
    x = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    # No filename: an npz is still recognised by its x.npy member.
    r = upload_raw(client, make_npz(x=x, y=y), name="rgb")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["kind"], ds["channels"], ds["image_size"], ds["num_classes"]) == (
        "rgb",
        "npz",
        3,
        8,
        3,
    )


def test_zip_with_class_folders(client, settings):
    r = upload(client, labelled_zip(), filename="pets.zip", name="my pets")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["name"] == "my pets" and ds["kind"] == "image-folder"
    assert ds["num_images"] == 16 and ds["channels"] == 3
    assert ds["num_classes"] == 2 and ds["class_names"] == ["cats", "dogs"]
    assert ds["image_size"] == 20  # the first image's centre square (20x24 -> 20)
    images = settings.resolved_store_dir / "datasets" / ds["id"] / "images"
    assert sorted(p.name for p in images.iterdir()) == ["cats", "dogs"]  # root folder stripped
    assert not list(images.rglob(".*")) and not list(images.rglob("Thumbs.db"))


def test_zip_of_loose_images_as_raw_body(client):
    data = make_zip({f"img{i}.png": png((16, 16), "L", i * 20) for i in range(5)})
    r = upload_raw(client, data, ctype="application/zip")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["kind"], ds["num_images"], ds["channels"], ds["num_classes"]) == (
        "upload",
        "image-folder",
        5,
        1,
        None,
    )


def test_list_get_delete(client, settings):
    a = upload(client, make_npz(x=np.zeros((4, 8, 8), np.uint8)), filename="a.npz").json()
    b = upload(client, labelled_zip(per_class=2), filename="b.zip").json()
    items = client.get("/v1/datasets").json()["items"]
    assert [d["id"] for d in items if not d["builtin"]] == [b["id"], a["id"]]  # newest first
    got = client.get(f"/v1/datasets/{a['id']}")
    assert got.status_code == 200 and got.json()["name"] == "a"
    r = client.delete(f"/v1/datasets/{a['id']}")
    assert r.status_code == 204
    assert not (settings.resolved_store_dir / "datasets" / a["id"]).exists()
    assert_problem(client.get(f"/v1/datasets/{a['id']}"), 404, None)
    assert store_entries(settings, "datasets") == [b["id"]]


def test_delete_while_a_queued_job_uses_it(client, settings):
    ds = upload(client, make_npz(x=np.zeros((8, 16, 16), np.uint8)), filename="a.npz").json()
    r = client.post("/v1/jobs", json={"config": {**TINY, "dataset": ds["id"]}})
    assert r.status_code == 202, r.text
    assert_problem(client.delete(f"/v1/datasets/{ds['id']}"), 409, None)
    assert (settings.resolved_store_dir / "datasets" / ds["id"] / "data.npz").is_file()


def job_racing_dataset_delete(client, settings, monkeypatch) -> None:
    """POST /v1/jobs while DELETE /v1/datasets/{id} commits between the dataset check and the
    insert: a 409 on config.dataset, nothing left behind (it was a 500: the conflict handler
    took every IntegrityError for an idempotency race)."""
    from app.core import datasets as core_datasets
    from app.core.db import session_scope
    from app.core.models import Dataset

    ds = upload(client, make_npz(x=np.zeros((8, 16, 16), np.uint8)), filename="a.npz").json()["id"]
    check = core_datasets.check_training_dataset

    def racing(*args, **kwargs):
        result = check(*args, **kwargs)
        with session_scope(settings.resolved_database_url) as other:  # the other request's DELETE
            other.delete(other.get(Dataset, ds))
        return result

    monkeypatch.setattr(core_datasets, "check_training_dataset", racing)
    r = client.post("/v1/jobs", json={"config": {**TINY, "dataset": ds}})
    assert_problem(r, 409, "config.dataset")
    assert "deleted" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_job_racing_the_delete_of_its_dataset_is_a_409(client, settings, monkeypatch):
    job_racing_dataset_delete(client, settings, monkeypatch)


def test_jobs_train_on_uploads(client, run_job):
    x = np.random.default_rng(1).integers(0, 255, (64, 16, 16), dtype=np.uint8)
    npz = upload(client, make_npz(x=x), filename="noise.npz").json()
    pets = upload(client, labelled_zip(per_class=8), filename="pets.zip").json()
    for ds, conditional in ((npz, False), (pets, True)):
        r = client.post(
            "/v1/jobs",
            json={
                "name": ds["name"],
                "config": {**TINY, "dataset": ds["id"], "conditional": conditional},
            },
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert run_job(job_id) == "succeeded", client.get(f"/v1/jobs/{job_id}").json()["error"]
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["dataset_id"] == ds["id"] and job["progress"]["step"] == 4


# --------------------------------------------------------------------------- size cap


def test_content_length_over_cap_is_refused_before_reading(tmp_path):
    with app_with(tmp_path, max_upload_bytes=4096) as (client, settings):
        big = make_npz(x=np.random.default_rng(0).integers(0, 255, (40, 16, 16), dtype=np.uint8))
        for r in (upload(client, big, filename="x.npz"), upload_raw(client, big, filename="x.npz")):
            assert_problem(r, 413, "file", "4096 bytes")
        assert_nothing_left(client, settings)


def test_streamed_body_over_cap_is_refused_while_streaming(tmp_path):
    """No Content-Length: bytes are counted as they arrive and reading stops at the cap.

    TestClient reads a streamed body whole before calling the app, so this drives the ASGI
    app directly and counts the body messages it asked for.
    """
    with app_with(tmp_path, max_upload_bytes=8192) as (client, settings):
        app = client.app
        received, sent = [], []

        async def receive():
            received.append(1)
            return {"type": "http.request", "body": b"\0" * 1024, "more_body": len(received) < 1000}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/datasets",
            "raw_path": b"/v1/datasets",
            "query_string": b"",
            "root_path": "",
            "client": ("test", 1),
            "server": ("test", 80),
            "headers": [
                (b"host", b"test"),
                (b"content-type", b"application/zip"),
                (b"authorization", client.headers["authorization"].encode()),
            ],
            "state": {},
        }
        asyncio.run(app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = json.loads(
            b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        )
        assert start["status"] == 413 and body["field"] == "file" and "8192 bytes" in body["detail"]
        assert len(received) <= 10  # stopped right after the cap, not at the end of the body
        assert_nothing_left(client, settings)


def test_multipart_file_over_cap_while_streaming(tmp_path):
    with app_with(tmp_path, max_upload_bytes=2048) as (client, settings):
        # Inside the form's overhead allowance, but the file part itself is over the cap.
        r = upload(client, b"PK\x03\x04" + b"\0" * 5000, filename="x.zip")
        assert_problem(r, 413, "file", "2048 bytes")
        assert_nothing_left(client, settings)


# --------------------------------------------------------------------------- not an archive


@pytest.mark.parametrize("data", [png(), b"hello, world", b"\x93NUMPY\x01\x00rest"])
def test_not_a_zip_or_npz_is_415(client, settings, data):
    r = upload(client, data, filename="x.png", ctype="image/png")
    assert_problem(r, 415, "file", "zip", "npz")
    assert_nothing_left(client, settings)


@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_empty_upload(client, settings, how):
    r = upload(client, b"", filename="x.zip") if how == "multipart" else upload_raw(client, b"")
    assert_problem(r, 422, "file", "empty")
    assert_nothing_left(client, settings)


def test_form_without_file_field(client, settings):
    r = client.post("/v1/datasets", files={"data": ("x.zip", labelled_zip(), "application/zip")})
    assert_problem(r, 422, "file", "'file'")
    assert_nothing_left(client, settings)


def test_truncated_zip(client, settings):
    assert_problem(upload(client, labelled_zip()[:3000]), 422, "file", "zip")
    assert_nothing_left(client, settings)


# --------------------------------------------------------------------------- unsafe archives


@pytest.mark.parametrize(
    "evil",
    [
        "../evil.png",
        "pets/../../evil.png",
        "/tmp/evil.png",
        "C:/evil.png",
        "..\\evil.png",
        "pets\\..\\..\\evil.png",
    ],
)
def test_path_traversal_is_refused(client, settings, tmp_path, evil):
    data = make_zip({"pets/cats/a.png": png(), "pets/dogs/b.png": png(), evil: png()})
    body = assert_problem(upload(client, data), 422, "file")
    assert evil in body["detail"] or repr(evil) in body["detail"]
    assert not list(tmp_path.parent.rglob("evil.png"))
    assert not (settings.resolved_store_dir.parent / "evil.png").exists()
    assert_nothing_left(client, settings)


def test_symlink_is_refused(client, settings):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", png())
        link = zipfile.ZipInfo("b.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert_problem(upload(client, buf.getvalue()), 422, "file", "b.png", "link")
    assert_nothing_left(client, settings)


def test_too_many_entries(tmp_path):
    with app_with(tmp_path, max_upload_entries=5) as (client, settings):
        data = make_zip({f"{i}.png": png((4, 4)) for i in range(10)})
        assert_problem(upload(client, data), 422, "file", "entries", "5")
        assert_nothing_left(client, settings)
        ok = make_zip({f"{i}.png": png((4, 4)) for i in range(5)})
        assert upload(client, ok).status_code == 201


def test_zip_bomb_by_ratio(client, settings):
    data = make_zip({"a.png": png(), "bomb.png": b"\0" * (8 << 20)})  # 8 MiB -> ~8 KiB
    assert len(data) < 64 * 1024
    assert_problem(upload(client, data), 422, "file", "bomb.png", "limit of 200:1", "zip bomb")
    assert_nothing_left(client, settings)


def test_zip_over_unpacked_limit(tmp_path):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, 3000, dtype=np.uint8).tobytes() for _ in range(2)]
    with app_with(tmp_path, max_upload_unpacked_bytes=4096) as (client, settings):
        data = make_zip({"a.png": noise[0], "b.png": noise[1]}, zipfile.ZIP_STORED)
        assert_problem(upload(client, data), 422, "file", "limit of 4096 bytes")
        assert_nothing_left(client, settings)


def test_member_bigger_than_declared_is_stopped(client, settings):
    """A central directory that under-declares a member's size: extraction stops, 422."""
    real = png() * 10
    data = bytearray(make_zip({"a.png": png(), "b.png": real}, zipfile.ZIP_STORED))
    size = struct.pack("<I", len(real))
    small = struct.pack("<I", 100)
    # Patch b.png's uncompressed size in its local header and central directory entry.
    local, central = data.find(b"PK\x03\x04", 1), data.rfind(b"PK\x01\x02")
    for pos, offset in ((local, 22), (central, 24)):
        assert data[pos + offset : pos + offset + 4] == size
        data[pos + offset : pos + offset + 4] = small
    body = assert_problem(upload(client, bytes(data)), 422, "file", "b.png")
    assert "declared" in body["detail"] or "corrupt" in body["detail"]
    assert_nothing_left(client, settings)


# --------------------------------------------------------------------------- bad contents


def test_non_image_file_is_named(client, settings):
    data = make_zip({"pets/cats/a.png": png(), "pets/dogs/b.png": png(), "pets/notes.txt": b"hi"})
    assert_problem(upload(client, data), 422, "file", "pets/notes.txt", "not an image")
    assert_nothing_left(client, settings)


def test_unreadable_image_is_named(client, settings):
    data = make_zip({"pets/cats/a.png": png(), "pets/dogs/b.png": b"not really a png"})
    body = assert_problem(
        upload(client, data), 422, "file", "pets/dogs/b.png", "not a readable image"
    )
    assert str(settings.resolved_store_dir) not in body["detail"]  # no server paths
    assert_nothing_left(client, settings)


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h pixels, with no real pixel data (cheap to make)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_images(client, settings):
    # Far over Pillow's own cap: refused when opened.
    data = make_zip({"a.png": png(), "bomb.png": _png_header(20000, 20000)})
    assert_problem(upload(client, data), 422, "file", "bomb.png")
    # Over gan_core's pixel cap (4096x4096): refused from the header, before decoding.
    buf = io.BytesIO()
    Image.new("1", (4100, 4100)).save(buf, format="PNG")
    data = make_zip({"a.png": png(), "big.png": buf.getvalue()})
    assert_problem(upload(client, data), 422, "file", "big.png", "over the limit")
    assert_nothing_left(client, settings)


def test_mixed_layout_and_deep_nesting(client, settings):
    mixed = make_zip({"a.png": png(), "cats/b.png": png(), "dogs/c.png": png()})
    assert_problem(upload(client, mixed), 422, "file", "mixes")
    deep = make_zip({"cats/x/b.png": png(), "dogs/c.png": png()})
    assert_problem(upload(client, deep), 422, "file", "cats/x/b.png", "nested")
    empty = make_zip({"__MACOSX/._a.png": b"x", "folder/": b""})
    assert_problem(upload(client, empty), 422, "file", "no images")
    assert_nothing_left(client, settings)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (open, (str(self.marker), "w"))


def test_npz_with_pickled_object_array(client, settings, tmp_path):
    marker = tmp_path / "pwned"
    x = np.empty(2, dtype=object)
    x[0], x[1] = _Evil(marker), 1
    r = upload(client, make_npz(x=x), filename="evil.npz")
    assert_problem(r, 422, "file", "evil.npz", "object array")
    assert not marker.exists()
    assert_nothing_left(client, settings)


@pytest.mark.parametrize(
    "arrays,words",
    [
        ({"x": np.zeros((4, 8, 8), np.float32)}, ["uint8", "float32"]),
        ({"x": np.zeros((4, 8, 6), np.uint8)}, ["square"]),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, np.int64)}, ["'y'"]),
        ({"images": np.zeros((4, 8, 8), np.uint8)}, ["no array 'x'"]),
    ],
)
def test_npz_refused_by_the_loader(client, settings, arrays, words):
    r = upload(client, make_npz(**arrays), filename="bad.npz")
    body = assert_problem(r, 422, "file", "bad.npz", *words)
    assert str(settings.resolved_store_dir) not in body["detail"]
    assert_nothing_left(client, settings)


def test_npz_header_declaring_a_huge_array(client, settings):
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 1000, 1000)}
    )
    data = make_zip({"x.npy": head.getvalue() + b"\0" * 64})
    assert_problem(
        upload(client, data, filename="huge.npz"), 422, "file", "huge.npz", "declares shape"
    )
    assert_nothing_left(client, settings)


def test_bad_name(client, settings):
    r = upload_raw(client, make_npz(x=np.zeros((4, 8, 8), np.uint8)), name="x" * 201)
    assert_problem(r, 422, "name")
    r = upload(client, make_npz(x=np.zeros((4, 8, 8), np.uint8)), filename="a.npz", name="  ")
    assert_problem(r, 422, "name")
    assert_nothing_left(client, settings)


# --------------------------------------------------------------------------- amplification


def test_a_zip_of_overlapping_entries_is_refused_before_anything_is_unpacked(client, settings):
    from tests.hostile import overlapping_zip

    bomb = overlapping_zip(400, png((64, 64)) + bytes(200_000))  # ~200 kB -> ~80 MB unpacked
    r = upload(client, bomb, filename="bomb.zip")
    assert_problem(r, 422, "file", "overlap", "zip bomb")
    assert_nothing_left(client, settings)


def test_decoded_pixels_are_budgeted_from_the_headers_before_decoding(tmp_path):
    from tests.hostile import png as blank
    from tests.hostile import zip_of

    with app_with(tmp_path, max_upload_pixels=3 * 64 * 64) as (client, settings):
        three = zip_of({f"{i}.png": blank(64) for i in range(3)})
        assert upload(client, three, filename="ok.zip").status_code == 201
        four = zip_of({f"{i}.png": blank(64) for i in range(4)})
        body = assert_problem(
            upload(client, four, filename="big.zip"), 413, "file", "pixels", str(3 * 64 * 64)
        )
        assert "3.png" in body["detail"]  # where the budget ran out
        x = np.zeros((4, 64, 64), np.uint8)
        assert_problem(upload(client, make_npz(x=x), filename="big.npz"), 413, "file", "pixels")
        assert_nothing_left(client, settings, uploads_before=1)


def test_an_npz_member_other_than_x_and_y_is_refused(client, settings):
    from tests.hostile import npz_with_extra_member

    r = upload(client, npz_with_extra_member(), filename="extra.npz")
    assert_problem(r, 422, "file", "unknown member", "z.npy")
    assert_nothing_left(client, settings)


def test_an_npz_is_checked_without_loading_its_arrays(client, settings, monkeypatch):
    """x is streamed through for its CRC, never loaded: np.load is not called by the API."""
    import numpy

    def no_load(*_a, **_k):
        raise AssertionError("the API must not load uploaded arrays")

    monkeypatch.setattr(numpy, "load", no_load)
    x = np.random.default_rng(0).integers(0, 255, (32, 16, 16), dtype=np.uint8)
    r = upload(client, make_npz(x=x, y=np.arange(32) % 4), filename="ok.npz")
    assert r.status_code == 201, r.text
    assert (r.json()["num_images"], r.json()["num_classes"], r.json()["image_size"]) == (32, 4, 16)
    corrupt = bytearray(make_npz(x=x))
    at = corrupt.index(x[5].tobytes()[:8])  # stored uncompressed by np.savez: flip a pixel
    corrupt[at] ^= 0xFF
    assert_problem(upload(client, bytes(corrupt), filename="bad.npz"), 422, "file", "corrupt")


def test_scratch_left_by_a_dead_process_is_removed_at_start(tmp_path):
    """An upload interrupted by a crash leaves its scratch file; the next start removes it,
    while the scratch area of a live process (another API replica) is kept."""
    import fcntl

    tmp = tmp_path / "store" / "tmp"
    (tmp / "dead-1").mkdir(parents=True)
    (tmp / "dead-1" / "upload.bin").write_bytes(b"x" * 1000)
    (tmp / "dead-1.lock").touch()  # nobody holds it: its process is gone
    (tmp / "0123abcd").mkdir()  # an older release's scratch directory, no lock at all
    (tmp / "live-2").mkdir()
    live = open(tmp / "live-2.lock", "a")  # noqa: SIM115 - a live replica's lock
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        with app_with(tmp_path):
            left = sorted(p.name for p in tmp.iterdir())
            assert "dead-1" not in left and "dead-1.lock" not in left and "0123abcd" not in left
            assert "live-2" in left and "live-2.lock" in left
            assert len([p for p in left if p.endswith(".lock")]) == 2  # the live one and ours
        assert sorted(p.name for p in tmp.iterdir()) == ["live-2", "live-2.lock"]  # ours is gone
    finally:
        live.close()
