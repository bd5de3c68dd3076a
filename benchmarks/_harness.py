"""Harness for the service benchmarks (sampling.py, job_latency.py): a real `ganforge serve`
process, time budgets, stats."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# `ganforge serve` exactly (the console script calls app.cli:main), plus one line that tells
# us the server process's torch intra-op thread count.
SERVE = (
    "import sys, torch\n"
    "print(f'BENCH torch_threads={torch.get_num_threads()}', file=sys.stderr, flush=True)\n"
    "from app.cli import main\n"
    "sys.exit(main(['serve'] + sys.argv[1:]))\n"
)


class BudgetExceeded(RuntimeError):
    pass


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise BudgetExceeded(f"--time-budget exhausted before/while: {what}")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def summary(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The same work the worker child does before its first step, in a fresh process (imports
# done first, as the worker's pre-forked child has them): where the POST->step time goes.
ATTRIBUTION = """
import json, tempfile, time
import torch
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.training import TrainHooks, train
t = time.perf_counter()
ds = load_dataset('shapes', image_size=32, seed=0)
t_data = time.perf_counter() - t
marks = []
t = time.perf_counter()
with tempfile.TemporaryDirectory() as rd:
    train(TrainConfig(dataset='shapes', image_size=32, steps=3, device='cpu'), rd,
          TrainHooks(on_progress=lambda p: marks.append(time.perf_counter() - t), progress_interval=0.0),
          dataset=ds)
print(json.dumps({'load_dataset_shapes_s': t_data, 'train_call_to_step1_report_s': marks[0],
                  'step2_s': marks[1] - marks[0], 'step3_s': marks[2] - marks[1],
                  'torch_threads': torch.get_num_threads()}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def parse_ts(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


class Server:
    """`ganforge serve` in its own process group, stopped (group-wide) by stop()."""

    def __init__(self, data_dir: Path, port: int, log: Path):
        self.data_dir, self.port, self.url = data_dir, port, f"http://{HOST}:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
        env |= {
            "GANFORGE_DATA_DIR": str(data_dir),
            "GANFORGE_HOST": HOST,
            "GANFORGE_PORT": str(port),
            # the per-key sampling limit (20/s, burst 40 by default) would turn the repeated-
            # request test into 429s; set far above what we send, so its code still runs
            "GANFORGE_SAMPLE_RATE": "100000",
            "GANFORGE_SAMPLE_BURST": "100000",
            # sampling.py's setup job checkpoints at each of its last two steps, under the
            # service's floor on checkpoint_every (25 by default)
            "GANFORGE_MIN_CHECKPOINT_EVERY": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-c", SERVE, "--host", HOST, "--port", str(port)],
            env=env,
            cwd=data_dir,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def threads(self) -> int | None:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("BENCH torch_threads="):
                return int(line.split("=", 1)[1])
        return None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM the group we started (serve + its worker), then SIGKILL what is left."""
        pgid = self.popen.pid  # start_new_session: the group id is serve's pid

        def group_alive() -> bool:
            self.popen.poll()  # reap serve itself, so a zombie does not count
            try:
                os.killpg(pgid, 0)
                return True
            except ProcessLookupError:
                return False

        for sig, wait in ((signal.SIGTERM, 40.0), (signal.SIGKILL, 10.0)):
            if not group_alive():
                break
            os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and group_alive():
                time.sleep(0.2)
        self._fh.close()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_ready(client: httpx.Client, server: Server, budget: Budget, limit: float) -> float:
    t0 = time.monotonic()
    while True:
        if not server.alive():
            raise RuntimeError(f"server exited early:\n{server.tail()}")
        try:
            r = client.get("/readyz")
            if r.status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"server not ready after {limit:.0f}s:\n{server.tail()}")
        budget.check("waiting for /readyz")
        time.sleep(0.25)


def connect(
    server: Server, budget: Budget, limit: float = 240
) -> tuple[httpx.Client, dict[str, str], float]:
    """A client of ``server`` once it is ready, carrying the admin key that embedded serve
    writes into its data dir (auth is on by default); also those headers and the seconds
    until ready."""
    client = httpx.Client(base_url=server.url, timeout=180, trust_env=False)
    t_ready = wait_ready(client, server, budget, limit)
    key_file = server.data_dir / "admin-key"
    auth = {"Authorization": f"Bearer {key_file.read_text().strip()}"} if key_file.is_file() else {}
    client.headers.update(auth)
    return client, auth, t_ready


class ServedRun:
    """One benchmark run against its own `ganforge serve` in a temp data dir.

    ``with ServedRun(out, path, "name") as run: client, auth, t = run.start(budget); ...``:
    on an error (Ctrl-C and SIGTERM included) it records it in ``out`` and prints the server
    log's tail; in any case it stops the server, writes ``out`` as JSON at ``path`` and
    removes the data dir (unless ``keep``). ``run.failed`` says whether the body raised.
    """

    def __init__(self, out: dict, path: Path, name: str, keep: bool = False):
        self.out, self.path, self.keep = out, path, keep
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"ganforge-{name}-bench-"))
        self.server: Server | None = None
        self.failed = False

    def start(self, budget: Budget) -> tuple[httpx.Client, dict[str, str], float]:
        self.server = Server(self.data_dir, free_port(), self.data_dir / "server.log")
        return connect(self.server, budget)

    def __enter__(self) -> ServedRun:
        def _terminate(signum, _frame):  # make SIGTERM end the run like Ctrl-C
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _terminate)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None:
            self.failed = True
            self.out["error"] = f"{type(exc).__name__}: {exc}"
            print(f"error: {self.out['error']}", file=sys.stderr)
            if self.server is not None:
                print(f"--- server log tail ---\n{self.server.tail()}", file=sys.stderr)
        if self.server is not None:
            self.server.stop()
            self.out["server_stopped"] = not self.server.alive()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.out, indent=2, default=str))
        print(f"wrote {self.path}")
        if self.keep:
            print(f"kept {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return True  # recorded: main() returns 1


def wait_job(client: httpx.Client, job_id: str, budget: Budget, limit: float) -> dict:
    t0 = time.monotonic()
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"job {job_id} not finished after {limit:.0f}s: {job['status']}")
        budget.check(f"waiting for job {job_id}")
        time.sleep(0.2)
