"""Translate latency and throughput of the service against the in-process floor, in one run.

It starts the real server (`ganforge serve`, embedded mode: SQLite, local store, one worker
child) on 127.0.0.1 with a temp data dir, trains a paired (pix2pix) job at each --sizes side
the real way (POST /v1/jobs, kind paired on the built-in shapes-edges, U-Net and PatchGAN at
width 64, the default, a few steps by the embedded worker), and then, for each checkpoint,
POSTs grey edge images (the model's input domain, at its side) to .../translate:

  a  floor        in this process: the same translator (gan_core.translation.inference
                  .load_translator of that checkpoint, loaded once) on the same inputs already
                  decoded and prepared (prepare_image), translate() + the server's PNG encoder
                  (image_png), on a worker thread with the server's torch thread count, as
                  benchmarks/sampling.py's floor for samples. The floor that also decodes the
                  posted bytes is reported for information
  b  sequential   one client, one request at a time, every image distinct (its sha256 is in
                  the ETag, so the PNG cache never answers): p50/p95, interleaved with floor
                  calls round by round so machine load hits both alike
  c  cold         the first request on each checkpoint (the first of the process for the first)
  d  concurrent   16 client threads (own httpx.Client each, distinct images): throughput vs
                  the floor's single-thread throughput measured right before and after
  e  repeat       one identical image again and again (the PNG cache), and If-None-Match (412:
                  a POST's failed condition; "repeat_304" in the JSON, as runs before it said)
  h  memory       --memory-requests distinct images by --clients clients on one checkpoint:
                  the server's RSS before, after each quarter, and after

Inputs are distinct because each one is a different shapes-edges image with its index written
into its first pixels: the uncached path. Repeats are (e) only; they are trivially fast.

The server runs concurrent requests for one model as a batch (one forward pass where that
gives the same bytes; app.core.serving.translate_batcher); the floor stays one image at a
time, and (d) reports the server's batches.

Target (issue 18): (d) >= 0.9x the floor's throughput. Results: a table on stdout and JSON
at --out.

    .venv/bin/python benchmarks/translate_speed.py --out benchmarks/results/translate_speed-run1.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The same OpenMP policy `ganforge serve` sets for itself, so floor and server compare fairly.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import torch  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    HOST,
    Budget,
    BudgetExceeded,
    ServedRun,
    pct,
    proc_cpu_seconds,
    summary,
    wait_job,
)
from benchmarks._sampling_parts import rss_mb  # noqa: E402
from benchmarks._translate_parts import Floor, Inputs, report  # noqa: E402


def stats(values_s: list[float]) -> dict:
    out = summary(values_s)
    out["p95_ms"] = pct([v * 1000 for v in values_s], 95)
    return out


class Load:
    """POST .../translate requests with the run's auth headers."""

    def __init__(self, client: httpx.Client, port: int, auth: dict):
        self.client, self.port, self.auth = client, port, auth

    def batches(self) -> dict[str, float]:
        """The server's batches of translate requests so far (ganforge_translate_batch_size
        on /metrics): batches and images, as one forward pass and per image; {} if hidden."""
        resp = self.client.get("/metrics")
        counts: dict[str, float] = {}
        kinds = {"_count{": "batches", "_sum{": "images"}
        for line in resp.text.splitlines() if resp.status_code == 200 else []:
            name, _, value = line.rpartition(" ")
            for suffix, what in kinds.items():
                if name.startswith("ganforge_translate_batch_size" + suffix):
                    forward = name.split('forward="', 1)[1].split('"', 1)[0]
                    counts[f"{what}_{forward}"] = float(value)
        return counts

    def new_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://{HOST}:{self.port}", timeout=600, trust_env=False, headers=self.auth
        )

    def post(
        self, url: str, png: bytes, c: httpx.Client | None = None, headers: dict | None = None
    ) -> tuple[float, httpx.Response]:
        t = time.perf_counter()
        resp = (c or self.client).post(
            url, content=png, headers={"Content-Type": "image/png", **(headers or {})}
        )
        dt = time.perf_counter() - t
        if resp.status_code not in (200, 412):  # 412: If-None-Match named the ETag
            raise RuntimeError(f"POST {url} -> {resp.status_code}: {resp.text[:300]}")
        return dt, resp

    def concurrent(
        self, url: str, per_client: list[list[bytes]], budget: Budget, spid: int
    ) -> tuple[list[float], list[str], float, float]:
        """One client thread per list of images, started together: (latencies, errors, wall
        seconds, the server's CPU seconds)."""
        barrier = threading.Barrier(len(per_client) + 1)
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def worker(images: list[bytes]) -> None:
            with self.new_client() as c:
                c.get("/healthz")  # connect before the clock starts
                barrier.wait()
                for png in images:
                    try:
                        dt, _ = self.post(url, png, c)
                        with lock:
                            lat.append(dt)
                    except Exception as exc:  # counted, reported
                        with lock:
                            errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(x,), daemon=True) for x in per_client]
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
        self,
        url: str,
        images: Iterator[bytes],
        requests: int,
        clients: int,
        budget: Budget,
        spid: int,
    ) -> list[float]:
        """The server's RSS (MB) before, after each quarter of ``requests`` distinct images
        by ``clients`` threads, and after."""
        local = threading.local()

        def one(png: bytes) -> None:
            if not hasattr(local, "c"):
                local.c = self.new_client()
            self.post(url, png, local.c)

        rss = [rss_mb(spid)]
        quarter = max(1, requests // 4)
        with ThreadPoolExecutor(clients) as pool:
            done = 0
            while done < requests:
                budget.check("memory")
                k = min(quarter, requests - done)
                list(pool.map(one, [next(images) for _ in range(k)]))
                done += k
                rss.append(rss_mb(spid))
        return rss


def train_checkpoint(client: httpx.Client, data_dir: Path, size: int, steps: int, budget: Budget):
    """A paired job at ``size`` trained ``steps`` steps by the embedded worker: (job id,
    checkpoint id, checkpoint dir)."""
    cfg = {
        "kind": "paired",
        "dataset": "shapes-edges",
        "image_size": size,
        "steps": steps,
        "batch_size": 4,
        "checkpoint_every": steps,
    }  # U-Net and PatchGAN at width 64, the default
    r = client.post("/v1/jobs", json={"name": f"bench-translate-{size}", "config": cfg})
    r.raise_for_status()
    job = wait_job(client, r.json()["id"], budget, limit=900)
    if job["status"] != "succeeded":
        raise RuntimeError(f"setup job at {size}px {job['status']}: {job['error']}")
    # the checkpoint's id from the headers of a translation of 'latest' (a throwaway image,
    # so that the measured path is the one of a fixed id: no per-request lookup of 'latest')
    r = client.post(
        f"/v1/jobs/{job['id']}/checkpoints/latest/translate",
        content=Inputs.blank(size),
        headers={"Content-Type": "image/png"},
    )
    r.raise_for_status()
    ck, step = r.headers["x-checkpoint-id"], int(r.headers["x-checkpoint-step"])
    ckpt_dir = data_dir / "store" / "jobs" / job["id"] / "checkpoints" / f"step-{step:08d}"
    assert ckpt_dir.is_dir(), ckpt_dir
    return job["id"], ck, ckpt_dir


def measure_size(args, load: Load, spid: int, job: str, ck: str, ckpt_dir: Path, budget: Budget):
    """(a)-(e) on one checkpoint; its dict of results."""
    url = f"/v1/jobs/{job}/checkpoints/{ck}/translate"
    res: dict = {"checkpoint_dir": str(ckpt_dir)}
    floor = Floor(ckpt_dir, channels=1)
    inputs = Inputs(floor.size)
    try:
        # (c) cold: the first request on this checkpoint
        png0 = inputs.fresh()
        t_cold, resp0 = load.post(url, png0)
        _, _, floor0 = floor(floor.prepare(png0))
        res["cold_first_request_ms"] = t_cold * 1000
        res["png_identical_to_floor"] = resp0.content == floor0
        for _ in range(2):  # warm both sides
            floor(floor.prepare(inputs.fresh()))
            load.post(url, inputs.fresh())

        # (a)+(b) floor vs sequential HTTP, interleaved, every input distinct
        floor_t, floor_cpu, seq_t = [], [], []
        server_cpu = 0.0
        per_round = max(1, args.sequential // args.rounds)
        for rnd in range(args.rounds):
            budget.check("sequential rounds")
            for x in [floor.prepare(p) for p in inputs.many(per_round)]:
                dt, cpu, _ = floor(x)
                floor_t.append(dt)
                floor_cpu.append(cpu)
            c0 = proc_cpu_seconds(spid)
            for png in inputs.many(per_round):
                seq_t.append(load.post(url, png)[0])
            server_cpu += proc_cpu_seconds(spid) - c0
            print(
                f"  {floor.size}px round {rnd + 1}/{args.rounds}: floor p50 "
                f"{pct(floor_t, 50) * 1000:.1f} ms, HTTP p50 {pct(seq_t, 50) * 1000:.1f} ms",
                flush=True,
            )
        res["floor"], res["sequential"] = stats(floor_t), stats(seq_t)
        res["floor"]["cpu_ms_per_image"] = sum(floor_cpu) / len(floor_cpu) * 1000
        res["sequential"]["server_cpu_ms_per_request"] = server_cpu / len(seq_t) * 1000
        # for information: the floor that decodes and prepares the posted bytes as well
        res["floor_from_bytes"] = stats([floor(p)[0] for p in inputs.many(per_round)])

        # (d) concurrent clients vs the floor's throughput right before and after
        budget.check("concurrency")
        k = max(4, min(args.clients * args.per_client // 2, 16))
        before = floor.throughput([floor.prepare(p) for p in inputs.many(k)])
        per_client = [inputs.many(args.per_client) for _ in range(args.clients)]
        batched = load.batches()
        lat, errors, wall, cpu = load.concurrent(url, per_client, budget, spid)
        batched = {k: v - batched.get(k, 0.0) for k, v in load.batches().items()}
        after = floor.throughput([floor.prepare(p) for p in inputs.many(k)])
        thr, thr_floor = len(lat) / wall, (before + after) / 2
        res["concurrent"] = {
            "clients": args.clients,
            "requests": len(lat),
            "errors": errors,
            "wall_s": wall,
            "throughput_rps": thr,
            "latency": stats(lat) if lat else None,
            "floor_throughput_rps_before": before,
            "floor_throughput_rps_after": after,
            "floor_throughput_rps": thr_floor,
            "ratio_vs_floor": thr / thr_floor,
            "server_cpu_ms_per_request": cpu / max(1, len(lat)) * 1000,
            "target_0.9_met": thr / thr_floor >= 0.9 and not errors,
            # the server batches concurrent requests for one model (the floor does not)
            "batches": batched,
        }
        print(
            f"  {floor.size}px {args.clients} clients: {thr:.2f} req/s vs floor {thr_floor:.2f} "
            f"(before {before:.2f}, after {after:.2f}) = {thr / thr_floor:.2f}x; errors "
            f"{len(errors)}",
            flush=True,
        )

        # (e) one identical image again and again (PNG cache), and conditional (412)
        png_r = inputs.fresh()
        _, first = load.post(url, png_r)
        etag = first.headers["etag"]
        rep, rep304 = [], []
        for _ in range(args.repeat):
            dt, resp = load.post(url, png_r)
            assert resp.status_code == 200 and resp.content == first.content
            rep.append(dt)
            dt, resp = load.post(url, png_r, headers={"If-None-Match": etag})
            assert resp.status_code == 412, resp.status_code
            rep304.append(dt)
        res["repeat_png_cache"], res["repeat_304"] = stats(rep), stats(rep304)
        return res, inputs
    finally:
        floor.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="32,64", help="image sides of the paired checkpoints")
    ap.add_argument("--train-steps", type=int, default=3, help="steps of each setup job")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved floor/HTTP rounds")
    ap.add_argument("--sequential", type=int, default=40, help="sequential HTTP requests in all")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=3, help="requests per client in (d)")
    ap.add_argument("--repeat", type=int, default=50, help="identical requests in (e), each kind")
    ap.add_argument("--memory-requests", type=int, default=1000)
    ap.add_argument("--memory-size", type=int, default=32, help="the checkpoint (h) loads")
    ap.add_argument("--time-budget", type=float, default=1500, help="seconds for the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (and server log)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/translate_speed.json")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    budget = Budget(args.time_budget)
    out: dict = {
        "benchmark": "translate_speed",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sizes": {},
    }
    with ServedRun(out, args.out, "translate", keep=args.keep) as run:
        client, auth, t_ready = run.start(budget)
        server, data_dir = run.server, run.data_dir
        assert server is not None
        spid = server.popen.pid
        print(f"server ready in {t_ready:.1f}s on {HOST}:{server.port}; {data_dir}", flush=True)
        ckpts = {}
        for size in sizes:
            t = time.perf_counter()
            ckpts[size] = train_checkpoint(client, data_dir, size, args.train_steps, budget)
            print(f"paired job at {size}px trained in {time.perf_counter() - t:.1f}s", flush=True)
        threads = server.threads()
        if threads:
            torch.set_num_threads(threads)
        out["env"] = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or "cpu",
            "cpu_count": os.cpu_count(),
            "torch_threads_floor": torch.get_num_threads(),
            "torch_threads_server": threads,
            "loadavg_start": list(os.getloadavg()),
            "omp_env": {
                k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "GOMP_"))
            },
        }
        load = Load(client, server.port, auth)
        all_inputs = {}
        for size in sizes:
            job, ck, ckpt_dir = ckpts[size]
            out["sizes"][size], all_inputs[size] = measure_size(
                args, load, spid, job, ck, ckpt_dir, budget
            )
            out["sizes"][size]["loadavg_after"] = list(os.getloadavg())
        if args.memory_requests:
            job, ck, _ = ckpts[args.memory_size]
            inputs = all_inputs[args.memory_size]
            url = f"/v1/jobs/{job}/checkpoints/{ck}/translate"
            fresh = iter(inputs.fresh, None)
            t = time.perf_counter()
            rss = load.memory(url, fresh, args.memory_requests, args.clients, budget, spid)
            out["memory"] = {
                "size": args.memory_size,
                "requests": args.memory_requests,
                "clients": args.clients,
                "seconds": time.perf_counter() - t,
                "rss_mb": rss,
                "rss_growth_mb": rss[-1] - rss[0],
            }
        out["env"]["loadavg_end"] = list(os.getloadavg())
        report(out)
        out["wall_seconds"] = args.time_budget - budget.left()
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
