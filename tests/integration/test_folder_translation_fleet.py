"""A folder translation on the real fleet: Postgres records, Redis carries the
ganforge.translate_folder message, the Celery worker process runs it; result.zip holds the
PNGs POST …/translate gives, and the unreadable image is reported."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest

from tests.api.test_translate import PAIRED, noise_image
from tests.api.upload_helpers import make_zip

pytestmark = pytest.mark.integration


def test_a_folder_is_translated_by_the_celery_worker(stack):
    c = stack.client
    r = c.post("/v1/jobs", json={"name": "edges", "config": {**PAIRED, "steps": 2}})
    assert r.status_code == 202, r.text
    job = stack.wait_status(r.json()["id"], {"succeeded", "failed", "canceled"})
    assert job["status"] == "succeeded", f"{job}\n{stack.logs()}"
    images = {f"in/{i}.png": noise_image((30, 40), "L", i) for i in range(3)}
    data = make_zip({**images, "in/bad.png": b"\x89PNG\r\n\x1a\n nope"})
    r = c.post(
        f"/v1/jobs/{job['id']}/checkpoints/latest/translations",
        files={"file": ("in.zip", data, "application/zip")},
    )
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    deadline = time.monotonic() + 120
    while (now := c.get(location).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"{now}\n{stack.logs()}"
        time.sleep(0.2)
    assert now["status"] == "succeeded", f"{now}\n{stack.logs()}"
    assert now["progress"] == {"done": 4, "total": 4, "failed": 1}
    z = c.get(f"{location}/result.zip")
    assert z.status_code == 200, z.text
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert sorted(zf.namelist()) == ["in/0.png", "in/1.png", "in/2.png", "report.json"]
        assert json.loads(zf.read("report.json"))["failed"][0]["name"] == "in/bad.png"
        for name, raw in images.items():
            one = c.post(
                f"/v1/jobs/{job['id']}/checkpoints/{now['checkpoint_id']}/translate",
                content=raw,
                headers={"Content-Type": "image/png"},
            )
            assert zf.read(name) == one.content, name
    assert c.delete(location).status_code == 204
    assert c.get(location).status_code == 404
