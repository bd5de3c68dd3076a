"""POST /v1/datasets refusing what it must: over the size cap, not an archive, unsafe
archives, bad contents, amplification (no 500s, no leftovers)."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.api.upload_helpers import (
    app_with,
    assert_nothing_left,
    assert_problem,
    labelled_zip,
    make_npz,
    make_zip,
    png,
    upload,
    upload_raw,
)

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
