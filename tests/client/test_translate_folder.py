"""Client.translate_folder and the folder translation methods against a real embedded
`ganforge serve` (its own worker child and folder broker): a folder with a subfolder, a
corrupt image and a text file is translated on the worker into the PNGs Client.translate
gives, the unreadable one reported; a zip kept as it is; the server's copy deleted or kept;
a refusal before anything runs."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from ganforge_client import Client, Conflict, FolderTranslation, Invalid, Job, NotFound
from tests.client.test_translate import PAIRED, _picture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def paired(server, key) -> Job:
    with Client(server.url, key) as c:
        done = c.wait(c.create_job(PAIRED, name="edges2shapes").id, timeout=180)
        assert done.status == "succeeded", done
        return done


def _folder(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _picture(seed=1).save(folder / "a.png")
    _picture(seed=2).save(folder / "sub" / "b.jpg", quality=95)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image: left out of the zip")
    return folder


def test_translate_folder_writes_what_translate_gives(client, paired, tmp_path):
    folder = _folder(tmp_path)
    seen: list[FolderTranslation] = []
    done = client.translate_folder(
        paired.id, folder, tmp_path / "out", progress=seen.append, poll=0.1, timeout=120
    )
    assert done.status == "succeeded" and seen[-1].status == "succeeded"
    assert done.checkpoint_id == client.get_checkpoint(paired.id, "latest").id
    assert done.progress.total == 3 and done.progress.failed == 1
    assert [f["name"] for f in done.report.failed] == ["c.png"]
    assert done.report.failed[0]["status"] == 422
    out = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert out == ["a.png", "sub", "sub/b.png"]
    for name, source in (("a.png", "a.png"), ("sub/b.png", "sub/b.jpg")):
        assert (tmp_path / "out" / name).read_bytes() == client.translate(
            paired.id, folder / source, done.checkpoint_id
        )
    with pytest.raises(NotFound):  # keep=False: the server's copy is gone
        client.get_translation(done.id)


def test_a_zip_out_and_a_kept_translation(client, paired, tmp_path):
    folder = _folder(tmp_path)
    done = client.translate_folder(
        paired.id, folder, tmp_path / "result.zip", poll=0.1, timeout=120, keep=True
    )
    with zipfile.ZipFile(tmp_path / "result.zip") as zf:
        assert sorted(zf.namelist()) == ["a.png", "report.json", "sub/b.png"]
        assert json.loads(zf.read("report.json"))["failed"][0]["name"] == "c.png"
        assert Image.open(io.BytesIO(zf.read("a.png"))).size == (32, 32)
    assert client.get_translation(done.id).status == "succeeded"
    assert done.id in [t.id for t in client.list_translations()]
    client.delete_translation(done.id)
    assert done.id not in [t.id for t in client.list_translations()]


def test_an_idempotency_key_sent_twice_starts_one_translation(client, paired, tmp_path):
    folder = _folder(tmp_path)
    first = client.create_translation(paired.id, folder, idempotency_key="convert-1")
    again = client.create_translation(paired.id, folder, idempotency_key="convert-1")
    assert again.id == first.id
    (folder / "d.png").write_bytes((folder / "a.png").read_bytes())  # another request
    with pytest.raises(Conflict) as refused:
        client.create_translation(paired.id, folder, idempotency_key="convert-1")
    assert refused.value.field == "Idempotency-Key"
    other = client.create_translation(paired.id, folder, idempotency_key="convert-2")
    assert other.id != first.id
    for made in (first, other):
        client.wait_translation(made.id, timeout=120, poll=0.1)
        client.delete_translation(made.id)


def test_refused_before_it_runs(client, paired, tmp_path):
    with pytest.raises(Invalid) as refused:
        client.create_translation(paired.id, _folder(tmp_path), direction="b2a")
    assert refused.value.field == "direction"
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(Invalid) as refused:
        client.create_translation(paired.id, tmp_path / "x.zip")
    assert refused.value.status == 415 and refused.value.field == "file"
