"""Helpers of the upload tests: archives and arrays to send, and checks that nothing was left."""

from __future__ import annotations

import io
import zipfile
from contextlib import contextmanager

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.api.main import create_app
from app.core.settings import Settings
from tests.api.conftest import make_key
from tests.tiny import tiny

PROBLEM = "application/problem+json"
TINY = tiny(steps=4, checkpoint_every=2)


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
