"""The README's first command: `ganforge serve` with no settings at all."""

from __future__ import annotations

import io
import subprocess
import time

import pytest
from PIL import Image

from tests.integration.conftest import Stack, child_pids
from tests.tiny import TEST_LIMITS, tiny

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    state = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
    ).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")


def test_embedded_serve_trains_and_samples_then_stops_its_worker(tmp_path):
    stack = Stack(tmp_path, None)
    for name in TEST_LIMITS:  # the service's own checkpoint limits, as a newcomer gets them
        del stack.env[name]
    stack.start_api()  # `ganforge serve` in an empty directory, no GANFORGE_* but the port
    try:
        stack.wait_ready()
        ready = stack.client.get("/readyz").json()
        assert ready["checks"] == {"database": "ok", "store": "ok", "broker": "ok", "workers": "ok"}
        # A quiet start (the worker is up: its lines are in): the address and the admin key,
        # not Alembic's INFO lines, Celery's banner and root warning or kombu's hostname one.
        start = stack.api.log.read_text()
        assert f"Uvicorn running on http://127.0.0.1:{stack.port}" in start, start
        assert "admin API key" in start and "ready." in start, start
        for noise in ("alembic", "SecurityWarning", "superuser", "No hostname", "[queues]"):
            assert noise not in start, start
        said = [line for line in start.splitlines() if '"GET /readyz' not in line]
        assert len(said) < 15, start  # was ~70 lines before the first request
        r = stack.client.post(
            "/v1/jobs",
            json={"name": "demo", "config": tiny(steps=20, checkpoint_every=25)},
        )
        assert r.status_code == 202
        job = stack.wait_status(r.json()["id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        png = stack.client.get(f"/v1/jobs/{job['id']}/checkpoints/latest/samples.png?n=4&nrow=4")
        assert Image.open(io.BytesIO(png.content)).size == (4 * 18 + 2, 18 + 2)
        # everything lives under ./.ganforge of the directory serve was started in
        assert (tmp_path / ".ganforge" / "ganforge.db").is_file()
        assert (tmp_path / ".ganforge" / "store" / "jobs" / job["id"] / "checkpoints").is_dir()
        assert "admin API key" in stack.api.log.read_text()  # printed on first start
        workers = child_pids(stack.api.popen.pid)
        assert workers, "serve should run its own worker child"
    finally:
        stack.stop()
    deadline = time.monotonic() + 30  # Celery's warm shutdown takes a few seconds
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "the worker outlived serve"


def _worker_processes(serve_pid: int) -> list[int]:
    """serve's worker child and the worker's own pool child."""
    children = child_pids(serve_pid)
    return children + [g for c in children for g in child_pids(c)]


def test_embedded_serve_restarts_its_worker_when_it_dies(tmp_path):
    import os
    import signal

    stack = Stack(tmp_path, None)
    stack.env["GANFORGE_SCORE_SAMPLES"] = "0"
    stack.start_api()
    try:
        stack.wait_ready()
        first = child_pids(stack.api.popen.pid)
        assert len(first) == 1
        for pid in _worker_processes(stack.api.popen.pid):
            os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer
        # readiness knows at once (not when the heartbeat is a minute old) ...
        deadline = time.monotonic() + 5
        while stack.client.get("/readyz").status_code == 200:
            assert time.monotonic() < deadline, "readyz did not notice the dead worker"
            time.sleep(0.1)
        # ... and serve starts a new worker, which trains the next job
        deadline = time.monotonic() + 60
        while not (
            child_pids(stack.api.popen.pid) and stack.client.get("/readyz").status_code == 200
        ):
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.3)
        assert child_pids(stack.api.popen.pid) != first
        r = stack.client.post(
            "/v1/jobs",
            json={"config": tiny(steps=10, checkpoint_every=10)},
        )
        assert stack.wait_status(r.json()["id"], {"succeeded", "failed"})["status"] == "succeeded"
        assert "the embedded worker exited" in stack.api.log.read_text()
        workers = _worker_processes(stack.api.popen.pid)
    finally:
        stack.stop()
    deadline = time.monotonic() + 30  # the restarted worker (a training one) stops with serve too
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)], "the restarted worker outlived serve"


def test_embedded_serve_with_two_devices_takes_jobs_on_one_and_on_two(tmp_path):
    """GANFORGE_WORKER_DEVICES=2 on a CPU: serve's worker takes both queues (the filesystem
    broker's too) and trains the 2-device job as two processes."""
    stack = Stack(tmp_path, None)
    stack.env["GANFORGE_WORKER_DEVICES"] = "2"
    stack.start_api()
    try:
        stack.wait_ready()
        ids = [
            stack.client.post("/v1/jobs", json={"config": tiny(steps=8, devices=n)}).json()["id"]
            for n in (2, 1)
        ]
        for job_id in ids:
            job = stack.wait_status(job_id, {"succeeded", "failed"})
            assert job["status"] == "succeeded", job
        assert [stack.client.get(f"/v1/jobs/{i}").json()["config"]["devices"] for i in ids] == [
            2,
            1,
        ]
    finally:
        stack.stop()
