"""Client.translate / translations and the `translate` / `translations` verbs: what goes on the
wire (httpx.MockTransport), the verbs' refusals before any request, and a real paired job
(pix2pix on the built-in shapes-edges) translated over HTTP, in Python and from a shell."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ganforge_client import Client, Invalid, Job
from ganforge_client.cli import main
from ganforge_client.translations import image_body, media_type_of

PAIRED = {
    "kind": "paired",
    "dataset": "shapes-edges",
    "image_size": 32,
    "g_width": 8,
    "d_width": 8,
    "batch_size": 2,
    "steps": 4,
    "checkpoint_every": 2,
}
NOWHERE = "http://127.0.0.1:9"  # the verbs' refusals below must come before any request


def _picture(width: int = 40, height: int = 36, seed: int = 0) -> Image.Image:
    """An edge map like the dataset's A side: white outlines on black, not square."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), 0)
    x0, y0 = (int(v) for v in rng.integers(2, 10, 2))
    ImageDraw.Draw(img).rectangle([x0, y0, width - x0, height - y0], outline=255)
    return img


def _encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# -- on the wire, without a server -------------------------------------------------------------


def _recording() -> tuple[list[httpx.Request], Client]:
    seen: list[httpx.Request] = []
    out = _encoded(Image.new("RGB", (32, 32), (9, 8, 7)), "PNG")

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        headers = {"ETag": '"t1"', "X-Checkpoint-Id": "ckpt_7", "X-Checkpoint-Step": "40"}
        return httpx.Response(200, content=out, headers={**headers, "Content-Type": "image/png"})

    return seen, Client("http://gf.test", "secret", transport=httpx.MockTransport(handler))


def test_translate_sends_the_image_as_a_raw_body_of_its_own_type(tmp_path):
    img = _picture()
    png, jpeg = _encoded(img, "PNG"), _encoded(img.convert("RGB"), "JPEG")
    (tmp_path / "edges.jpg").write_bytes(png)  # named .jpg, but PNG bytes: the bytes decide
    seen, c = _recording()
    with c:
        out = c.translate("job/1", png)
        c.translate("job_1", tmp_path / "edges.jpg", "best", direction="a2b")
        c.translate("job_1", str(tmp_path / "edges.jpg"), ema=False)
        c.translate("job_1", bytearray(jpeg), "ckpt_3")
        as_image = c.translate("job_1", img, image_out=True)
    assert isinstance(out, bytes) and out.startswith(b"\x89PNG")
    assert (out.checkpoint_id, out.step, out.etag) == ("ckpt_7", 40, '"t1"')
    assert isinstance(as_image, Image.Image) and as_image.size == (32, 32)

    assert [r.method for r in seen] == ["POST"] * 5
    assert [r.url.raw_path for r in seen] == [
        b"/v1/jobs/job%2F1/checkpoints/latest/translate",
        b"/v1/jobs/job_1/checkpoints/best/translate?direction=a2b",
        b"/v1/jobs/job_1/checkpoints/latest/translate?ema=false",
        b"/v1/jobs/job_1/checkpoints/ckpt_3/translate",
        b"/v1/jobs/job_1/checkpoints/latest/translate",
    ]
    types = [r.headers["content-type"] for r in seen]
    assert types == ["image/png", "image/png", "image/png", "image/jpeg", "image/png"]
    assert [r.content for r in seen[:4]] == [png, png, png, jpeg]  # sent as they are
    assert seen[0].headers["authorization"] == "Bearer secret"
    assert int(seen[3].headers["content-length"]) == len(jpeg)
    sent = Image.open(io.BytesIO(seen[4].content))  # a PIL image goes as a lossless PNG
    assert sent.format == "PNG" and sent.mode == "L"
    assert np.array_equal(np.asarray(sent), np.asarray(img))


def test_the_body_type_comes_from_the_first_bytes():
    img = _picture().convert("RGB")
    assert media_type_of(_encoded(img, "PNG")) == "image/png"
    assert media_type_of(_encoded(img, "JPEG")) == "image/jpeg"
    assert media_type_of(_encoded(img, "GIF")) == "image/gif"
    assert media_type_of(_encoded(img, "BMP")) == "image/bmp"
    assert media_type_of(_encoded(img, "WEBP")) == "image/webp"
    assert media_type_of(b"not an image") == "application/octet-stream"  # the server says why
    body, kind = image_body(Image.new("CMYK", (5, 4), (0, 50, 100, 0)))  # no CMYK in PNG
    assert kind == "image/png" and Image.open(io.BytesIO(body)).mode == "RGB"
    with pytest.raises(TypeError, match="path, bytes or a PIL image"):
        image_body(12)
    with pytest.raises(FileNotFoundError):
        image_body("no/such/picture.png")


def test_translations_sends_only_what_is_set_and_errors_carry_the_problem():
    seen, c = _recording()
    with c:
        grid = c.translations("job_1", n=3, ema="auto")
        c.translations("job_1", "best", direction="b2a", image=True)
    assert grid.checkpoint_id == "ckpt_7"
    assert [(r.method, r.url.raw_path) for r in seen] == [
        ("GET", b"/v1/jobs/job_1/checkpoints/latest/translations.png?n=3&ema=auto"),
        ("GET", b"/v1/jobs/job_1/checkpoints/best/translations.png?direction=b2a"),
    ]

    problem = {"title": "Invalid input", "status": 422, "detail": "not a readable image"}
    refuse = httpx.MockTransport(lambda r: httpx.Response(422, json={**problem, "field": "image"}))
    with Client("http://gf.test", "k", transport=refuse) as c, pytest.raises(Invalid) as err:
        c.translate("job_1", b"garbage")
    assert (err.value.status, err.value.field, err.value.detail) == (
        422,
        "image",
        "not a readable image",
    )


def _verb(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([*args, "--url", NOWHERE, "--key", "k"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_folder_verb_refuses_before_any_request(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    _picture().save(folder / "a.png")
    rc, out, err = _verb(capsys, "translate", "job_1", str(folder))
    assert rc == 2 and "--out" in err and not out

    monkeypatch.chdir(folder)  # --out . is the input folder: its images would be overwritten
    for same in (".", str(folder), f"{folder}/../in"):
        rc, _, err = _verb(capsys, "translate", "job_1", str(folder), "--out", same)
        assert rc == 2 and "input folder" in err, (same, err)
    monkeypatch.chdir(tmp_path)

    (tmp_path / "file.png").write_bytes(b"x")
    rc, _, err = _verb(capsys, "translate", "job_1", "in", "--out", "file.png")
    assert rc == 2 and "is a file" in err

    _picture().convert("RGB").save(folder / "a.JPG")  # a.png and a.JPG would both be a.png
    rc, _, err = _verb(capsys, "translate", "job_1", "in", "--out", "out")
    assert rc == 2 and "a.JPG, a.png -> a.png" in err and not (tmp_path / "out").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    rc, _, err = _verb(capsys, "translate", "job_1", "empty", "--out", "out")
    assert rc == 2 and "no .png/.jpg/.jpeg files in empty" in err

    rc, _, err = _verb(capsys, "translate", "job_1", "missing.png")
    assert rc == 2 and "neither a file nor a folder" in err

    rc, _, err = _verb(capsys, "translate", "job_1", "in/a.png", "--out", "in")  # in/a.png itself
    assert rc == 2 and "is the input image" in err
    assert sorted(p.name for p in folder.iterdir()) == ["a.JPG", "a.png"]  # untouched


def test_a_request_the_verb_makes_reaches_the_server_it_names(tmp_path, capsys):
    """The file verb gets past its checks to the request: nobody listens at NOWHERE."""
    _picture().save(tmp_path / "a.png")
    rc, _, err = _verb(capsys, "translate", "job_1", str(tmp_path / "a.png"), "-o", "-")
    assert rc == 2 and NOWHERE in err and "connection refused" in err


# -- against a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def paired(server, key) -> Job:
    """One finished tiny pix2pix job (edges -> shapes) with two checkpoints."""
    with Client(server.url, key) as c:
        job = c.create_job(PAIRED, name="edges2shapes")
        done = c.wait(job.id, timeout=180)
        assert done.status == "succeeded", done
        return done


@pytest.mark.integration
def test_translate_a_file_bytes_and_a_pil_image(client, paired, tmp_path):
    latest = client.get_checkpoint(paired.id, "latest")
    img = _picture()
    path = tmp_path / "edges.png"
    img.save(path)

    png = client.translate(paired.id, path)
    assert png.startswith(b"\x89PNG") and png.etag
    assert (png.checkpoint_id, png.step) == (latest.id, 4)
    out = png.image()
    assert (out.size, out.mode) == ((32, 32), "RGB")  # the model's size; B is colour
    assert client.translate(paired.id, path.read_bytes(), latest.id) == png

    # The same pixels in other bytes (another zlib level) miss the server's cache by digest, so
    # this is the model run again: evaluation mode is a pure function of the input.
    recoded = _encoded(img, "PNG", compress_level=0)
    assert recoded != path.read_bytes()
    again = client.translate(paired.id, recoded)
    assert again.etag != png.etag  # (not a cache hit)
    assert again == png
    from_pil = client.translate(paired.id, img, image_out=True)
    assert np.array_equal(np.asarray(from_pil), np.asarray(out))

    older = [c for c in client.list_checkpoints(paired.id) if c.step == 2][0]
    first = client.translate(paired.id, path, older.id)
    assert (first.checkpoint_id, first.step) == (older.id, 2) and first != png

    jpeg = _encoded(img.convert("RGB"), "JPEG", quality=95)
    assert client.translate(paired.id, jpeg, image_out=True).size == (32, 32)


@pytest.mark.integration
def test_refusals_carry_the_servers_reason(client, paired):
    with pytest.raises(Invalid) as err:
        client.translate(paired.id, _picture(), direction="b2a")
    assert (err.value.status, err.value.field) == (422, "direction")
    assert "paired" in err.value.detail and "a2b" in err.value.detail

    with pytest.raises(Invalid) as err:
        client.translate(paired.id, b"\x89PNG\r\n\x1a\n but the rest is not")
    assert (err.value.status, err.value.field) == (422, "image") and err.value.detail


@pytest.mark.integration
def test_translations_grid(client, paired):
    grid = client.translations(paired.id, n=2)
    assert grid.startswith(b"\x89PNG") and grid.step == 4
    assert client.translations(paired.id, n=2) == grid
    two, three = grid.image(), client.translations(paired.id, n=3, image=True)
    assert two.width == three.width > two.height  # input | translation | target, a row each
    assert three.height > two.height


def gf(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.integration
def test_translate_verb_a_file_and_a_folder(cli_env, client, paired, tmp_path):
    env = cli_env
    img = _picture(seed=1)
    img.save(tmp_path / "one.png")
    expected = client.translate(paired.id, tmp_path / "one.png")

    here = tmp_path / "cwd"
    here.mkdir()
    said = gf(env, "translate", paired.id, str(tmp_path / "one.png"), cwd=here)
    assert said.returncode == 0, said.stderr
    assert (here / "one-translated.png").read_bytes() == expected  # the default name, here
    assert "wrote one-translated.png" in said.stdout and "--out" in said.stdout
    report = json.loads(
        gf(
            env,
            "translate",
            paired.id,
            str(tmp_path / "one.png"),
            "--out",
            "x.png",
            "--json",
            cwd=here,
        ).stdout
    )
    assert report["path"] == "x.png" and report["step"] == 4
    assert report["checkpoint_id"] == expected.checkpoint_id
    assert (here / "x.png").read_bytes() == expected

    folder = tmp_path / "in"
    folder.mkdir()
    img.save(folder / "b.png")
    _picture(seed=2).convert("RGB").save(folder / "a.jpg", quality=95)
    (folder / "c.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    (folder / "readme.txt").write_text("not an image: not picked up")
    run = gf(env, "translate", paired.id, str(folder), "--out", str(tmp_path / "out"))
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert (tmp_path / "out" / "b.png").read_bytes() == expected
    assert Image.open(tmp_path / "out" / "a.png").size == (32, 32)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("[1/3] a.jpg -> ") and lines[1].startswith("[2/3] b.png -> ")
    assert "translated 2 of 3 images" in lines[-1]
    refused = [line for line in run.stderr.splitlines() if line.startswith("[3/3] c.jpeg")]
    assert len(refused) == 1 and "refused: " in refused[0], run.stderr
    assert len(refused[0]) > len("[3/3] c.jpeg: refused: ")  # the server's reason follows
    assert "1 not translated: c.jpeg" in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "b.png", "c.jpeg", "readme.txt"]

    as_json = gf(env, "translate", paired.id, str(folder), "--out", str(tmp_path / "o2"), "--json")
    assert as_json.returncode == 1
    done = json.loads(as_json.stdout)
    assert [Path(w["path"]).name for w in done["written"]] == ["a.png", "b.png"]
    assert [Path(f["input"]).name for f in done["failed"]] == ["c.jpeg"]
    assert done["failed"][0]["status"] == 422 and done["step"] == 4

    (folder / "c.jpeg").unlink()
    clean = gf(env, "translate", paired.id, str(folder), "--out", str(tmp_path / "out"))
    assert clean.returncode == 0, clean.stderr

    wrong_way = gf(
        env,
        "translate",
        paired.id,
        str(folder),
        "--out",
        str(tmp_path / "o3"),
        "--direction",
        "b2a",
    )
    assert wrong_way.returncode == 2 and "field: direction" in wrong_way.stderr
    assert not wrong_way.stdout  # the folder is refused as a whole, before any image goes
    assert "paired" in wrong_way.stderr and not list((tmp_path / "o3").iterdir())


@pytest.mark.integration
def test_translations_verb(cli_env, client, paired, tmp_path):
    target = tmp_path / "grid.png"
    said = gf(cli_env, "translations", paired.id, "--n", "2", "--out", str(target))
    assert said.returncode == 0, said.stderr
    assert target.read_bytes() == client.translations(paired.id, n=2)
    assert "(step 4)" in said.stdout
