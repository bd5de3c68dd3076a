"""The README's first command: `ganforge serve` with no settings at all."""

from __future__ import annotations

import io
import subprocess
import time

import pytest
from PIL import Image

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")


def test_embedded_serve_trains_and_samples_then_stops_its_worker(tmp_path):
    stack = Stack(tmp_path, None)
    stack.start_api()  # `ganforge serve` in an empty directory, no GANFORGE_* but the port
    try:
        stack.wait_ready()
        ready = stack.client.get("/readyz").json()
        assert ready["checks"] == {"database": "ok", "store": "ok", "broker": "ok", "workers": "ok"}
        r = stack.client.post("/v1/jobs", json={"name": "demo", "config": {
            "dataset": "shapes", "image_size": 16, "g_width": 8, "d_width": 8, "batch_size": 8,
            "latent_dim": 16, "steps": 20, "checkpoint_every": 10}})
        assert r.status_code == 202
        job = stack.wait_status(r.json()["id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        png = stack.client.get(f"/v1/jobs/{job['id']}/checkpoints/latest/samples.png?n=4&nrow=4")
        assert Image.open(io.BytesIO(png.content)).size == (4 * 18 + 2, 18 + 2)
        # everything lives under ./.ganforge of the directory serve was started in
        assert (tmp_path / ".ganforge" / "ganforge.db").is_file()
        assert (tmp_path / ".ganforge" / "store" / "jobs" / job["id"] / "checkpoints").is_dir()
        assert "admin API key" in stack.api.log.read_text()  # printed on first start
        workers = _children(stack.api.popen.pid)
        assert workers, "serve should run its own worker child"
    finally:
        stack.stop()
    deadline = time.monotonic() + 30  # Celery's warm shutdown takes a few seconds
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "the worker outlived serve"
