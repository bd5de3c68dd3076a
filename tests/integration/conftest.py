"""Real parts: Redis on 127.0.0.1:6379, Postgres on 127.0.0.1:5432, and `ganforge serve` /
`ganforge worker` as separate processes, exactly as a fleet deployment runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.tiny import TEST_LIMITS

REDIS_URL = os.environ.get("GANFORGE_TEST_REDIS", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get("GANFORGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _need_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # CI starts Redis; locally this is the one thing to check
        pytest.fail(f"integration tests need Redis at {REDIS_URL}: {exc}")


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty Postgres database (its URL), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:
        pytest.fail(f"integration tests need Postgres at {PG_ADMIN_URL}: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh Postgres database for this test session."""
    with fresh_database("ganforge_it") as url:
        yield url


class Proc:
    """A child process with its log in a file, stopped on teardown."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.log = log
        self.args = args
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self._fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.cwd,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._fh.close()

    def kill(self) -> None:
        """SIGKILL the whole process group (worker parent and its pool child)."""
        self.stop(signal.SIGKILL)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Stack:
    """`ganforge serve` (fleet mode) and `ganforge worker`s sharing Redis, a database and a store."""

    def __init__(
        self, tmp: Path, database_url: str | None, extra_env: dict[str, str] | None = None
    ):
        self.tmp = tmp
        self.replicas: list[Proc] = []  # more `ganforge serve`s on these settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if database_url is None:  # embedded: only the port is set, like a newcomer's first run
            self.env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
            self.env.update(
                {
                    "GANFORGE_PORT": str(self.port),
                    "OMP_NUM_THREADS": "1",
                    "PYTHONPATH": str(Path(__file__).parents[2]),
                    **TEST_LIMITS,  # the tiny configs' checkpoints (tests/tiny.py)
                }
            )
            self.api, self.workers = None, []
            self.client = httpx.Client(base_url=self.url, timeout=30)
            return
        self.env = {
            **os.environ,
            "GANFORGE_DATA_DIR": str(tmp / "data"),
            "GANFORGE_DATABASE_URL": database_url,
            "GANFORGE_BROKER_URL": REDIS_URL,
            "GANFORGE_QUEUE": f"it-{uuid.uuid4().hex[:8]}",  # isolates this stack's messages
            "GANFORGE_PROGRESS_INTERVAL": "0.2",
            "GANFORGE_PORT": str(self.port),
            "OMP_NUM_THREADS": "1",  # two cores, several processes
            # Scoring off unless a test turns it on: an extractor per stack costs seconds.
            "GANFORGE_SCORE_SAMPLES": "0",
            **(extra_env or {}),
        }
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def start_api(self) -> None:
        self.api = Proc(
            [sys.executable, "-m", "app.cli", "serve"], self.env, self.tmp / "api.log", cwd=self.tmp
        )

    def start_worker(self, **env: str) -> Proc:
        """Another `ganforge worker`, with ``env`` over the stack's (GANFORGE_WORKER_DEVICES=...)."""
        n = len(self.workers)
        proc = Proc(
            [sys.executable, "-m", "app.cli", "worker", "--hostname", f"w{n}@it"],
            {**self.env, **env},
            self.tmp / f"worker{n}.log",
        )
        self.workers.append(proc)
        return proc

    def start_replica(self) -> tuple[Proc, str]:
        """Another `ganforge serve` on this stack's settings and its own port (stopped with
        the stack); returns it and its URL. Wait for it with ``replica_client``."""
        port = free_port()
        proc = Proc(
            [sys.executable, "-m", "app.cli", "serve"],
            {**self.env, "GANFORGE_PORT": str(port)},
            self.tmp / f"api{len(self.replicas) + 2}.log",
            cwd=self.tmp,
        )
        self.replicas.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    def replica_client(self, proc: Proc, url: str, timeout: float = 60) -> httpx.Client:
        """A client of a replica once it is ready, with this stack's key (if it has one)."""
        auth = self.client.headers.get("Authorization")
        client = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": auth} if auth else None
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, proc.tail()
            time.sleep(0.3)

    def use_key(self, key: str) -> None:
        self.client.headers["Authorization"] = f"Bearer {key}"

    def create_key(self, name: str, admin: bool = False) -> str:
        """`ganforge keys create`, as an operator runs it."""
        args = [sys.executable, "-m", "app.cli", "keys", "create", "--name", name]
        out = subprocess.run(
            args + (["--admin"] if admin else []),
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.client.get("/readyz")
                if last.status_code == 200:
                    if "Authorization" not in self.client.headers:
                        self._pick_key()
                    return
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"stack not ready: {last!r}\n{self.logs()}")

    def _pick_key(self) -> None:
        admin_file = self.tmp / ".ganforge" / "admin-key"
        if self.api is not None and admin_file.is_file():  # embedded serve made one at start
            self.use_key(admin_file.read_text().strip())
        else:
            self.use_key(self.create_key("it"))

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} stuck in {job.get('status')}: {job}\n{self.logs()}")

    def wait_step(self, job_id: str, at_least: int, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"]["step"] >= at_least:
                return job
            assert job["status"] in ("queued", "running"), job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never reached step {at_least}: {job}\n{self.logs()}")

    def wait_for(self, job_id: str, until, what: str, timeout: float = 240) -> dict:
        """Poll the job until ``until(job)``; it must stay queued or running meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            job = r.json()
            if until(job):
                return job
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() < deadline, f"never {what}: {job}\n{self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        parts = [f"--- api ---\n{self.api.tail()}" if self.api else ""]
        parts += [f"--- worker {i} ---\n{w.tail()}" for i, w in enumerate(self.workers)]
        return "\n".join(parts)

    def stop(self) -> None:
        self.client.close()
        for proc in [*self.workers, *self.replicas, self.api]:
            if proc is not None:
                proc.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pg_url):
    """A fleet stack on Postgres + Redis with one worker, shared by a module's tests."""
    _need_redis()
    s = Stack(tmp_path_factory.mktemp("stack"), pg_url)
    s.start_api()
    s.start_worker()
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
