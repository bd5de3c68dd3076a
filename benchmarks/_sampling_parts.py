"""The two sides that benchmarks/sampling.py compares: the in-process floor and the HTTP load.

``Floor`` renders the same 64-image grid as the server, in this process, on a worker thread
(the plain fp32 forward, or the server's own fast path). ``HttpLoad`` sends samples.png
requests: one at a time, from concurrent clients, or many distinct renders for memory.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks._harness import HOST, Budget, BudgetExceeded, proc_cpu_seconds
from gan_core import inference
from gan_core.checkpoint import load_generator
from gan_core.sampling import png_grid, sample, sample_inputs

N, NROW = 64, 8  # the grid every measurement renders


def png_pixel_diff(a: bytes, b: bytes) -> dict:
    """Mean and max absolute difference of two PNGs' pixels (0-255)."""
    import numpy as np
    from PIL import Image

    pa, pb = (np.asarray(Image.open(io.BytesIO(x)), dtype=np.int16) for x in (a, b))
    d = np.abs(pa - pb)
    return {"mean": float(d.mean()), "max": int(d.max())}


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Floor:
    """gan_core's sample + png_grid on the checkpoint's generator, loaded once (EMA weights, as
    the server's), and the server's fast path (gan_core.inference) in the server's ``mode``."""

    def __init__(self, ckpt_dir: Path, mode: str):
        self.ckpt_dir = ckpt_dir
        self.G = load_generator(ckpt_dir)
        self.fast_G = inference.prepare(self.G, mode)
        # The server renders on a worker thread of its threadpool, never on its main thread,
        # and that matters for torch on CPU (a main thread's OpenMP team spin-waits; on a busy
        # machine that costs ~2x, see docs/benchmarks.md). So the floor runs on one too.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor")
        self.cpu_per_render: list[float] = []  # CPU seconds per plain render, by throughput()

    def render_here(self, seed: int, load: bool = False, fast: bool = False) -> tuple[float, bytes]:
        """One grid on the calling thread: (seconds, PNG bytes)."""
        t = time.perf_counter()
        if fast:
            z, y = sample_inputs(self.fast_G, N, seed)
            data = png_grid(inference.run(self.fast_G, z, y), nrow=NROW)
        else:
            gen = load_generator(self.ckpt_dir) if load else self.G
            data = png_grid(sample(gen, N, seed), nrow=NROW)
        return time.perf_counter() - t, data

    def __call__(self, seed: int, load: bool = False, fast: bool = False) -> tuple[float, bytes]:
        """One grid on the floor's worker thread."""
        return self.pool.submit(self.render_here, seed, load, fast).result()

    def throughput(self, seeds: Iterator[int], k: int, fast: bool = False) -> float:
        """Renders per second over ``k`` sequential renders."""
        t, c = time.perf_counter(), time.process_time()
        for _ in range(k):
            self(next(seeds), fast=fast)
        if not fast:
            self.cpu_per_render.append((time.process_time() - c) / k)
        return k / (time.perf_counter() - t)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class HttpLoad:
    """samples.png requests against the server on ``port``, with the run's auth headers."""

    def __init__(self, client: httpx.Client, port: int, auth: dict):
        self.client, self.port, self.auth = client, port, auth

    def new_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://{HOST}:{self.port}", timeout=600, trust_env=False, headers=self.auth
        )

    def get(
        self, url: str, seed: int, c: httpx.Client | None = None, headers=None
    ) -> tuple[float, httpx.Response]:
        """One request: (seconds, response); anything but 200/304 raises."""
        t = time.perf_counter()
        # ema=true: the floor's generator (ema=auto may pick the raw one by its score)
        params = {"n": N, "nrow": NROW, "seed": seed, "ema": "true"}
        resp = (c or self.client).get(url, params=params, headers=headers)
        dt = time.perf_counter() - t
        if resp.status_code not in (200, 304):
            raise RuntimeError(f"GET {url} -> {resp.status_code}: {resp.text[:300]}")
        return dt, resp

    def concurrent(
        self, url: str, seeds: list[list[int]], budget: Budget, spid: int
    ) -> tuple[list[float], list[str], float, float]:
        """One client thread per seed list, started together: (latencies, errors, wall
        seconds, the server's CPU seconds)."""
        barrier = threading.Barrier(len(seeds) + 1)
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def worker(my_seeds: list[int]) -> None:
            with self.new_client() as c:
                c.get("/healthz")  # connect before the clock starts
                barrier.wait()
                for s in my_seeds:
                    try:
                        dt, _ = self.get(url, s, c)
                        with lock:
                            lat.append(dt)
                    except Exception as exc:  # counted, reported
                        with lock:
                            errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in seeds]
        for t in threads:
            t.start()
        barrier.wait(timeout=60)
        t0, c0 = time.perf_counter(), proc_cpu_seconds(spid)
        for t in threads:
            t.join(timeout=max(1.0, budget.left()))
        wall, cpu = time.perf_counter() - t0, proc_cpu_seconds(spid) - c0
        if any(t.is_alive() for t in threads):
            raise BudgetExceeded("concurrent clients did not finish within the time budget")
        return lat, errors, wall, cpu

    def memory(
        self, url: str, seeds: Iterator[int], requests: int, clients: int, budget: Budget, spid: int
    ) -> list[float]:
        """The server's RSS (MB) before, after each quarter of ``requests`` distinct renders
        by ``clients`` threads, and after."""
        local = threading.local()

        def one(seed: int) -> None:
            if not hasattr(local, "c"):
                local.c = self.new_client()
            self.get(url, seed, local.c)

        rss = [rss_mb(spid)]
        quarter = max(1, requests // 4)
        with ThreadPoolExecutor(clients) as pool:
            done = 0
            while done < requests:
                budget.check("memory")
                k = min(quarter, requests - done)
                list(pool.map(one, [next(seeds) for _ in range(k)]))
                done += k
                rss.append(rss_mb(spid))
        return rss
