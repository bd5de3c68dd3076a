"""Sampling latency and throughput of the service against the in-process floor, in one run.

It starts the real server (`ganforge serve`, embedded mode: SQLite, local store, one worker
child) on 127.0.0.1 with a temp data dir, registers a checkpoint the real way (POST /v1/jobs
with the default DCGAN at 32px and a few steps, trained by the embedded worker), and then
measures, always for a 64-image 8x8 PNG grid:

  a  floor        in this process: gan_core.sampling.sample + png_grid on that checkpoint's
                  generator (loaded once), same torch thread count as the server, and like
                  the server on a worker thread (the main-thread figure is reported too):
                  the plain eval-mode fp32 forward. The *fast floor* is the same through
                  the server's own fast path (gan_core.inference, in the server's mode)
  b  warm         GET samples.png, sequential, a different seed per request (no PNG cache,
                  no ETag): p50/p99, interleaved with floor calls to cancel machine load
  c  cold         the first request on a checkpoint: the very first in the server process,
                  and one on a second checkpoint once the process is warm
  d  concurrent   16 client threads (own httpx.Client each, distinct seeds): throughput vs
                  the floor's and the fast floor's single-thread throughput (measured right
                  before and after)
  e  repeat       one identical URL again and again (PNG cache), and with If-None-Match (304)
  f  naive        in-process load_generator + sample + png_grid per call (no cache)
  h  memory       --memory-requests distinct renders by --clients clients: the server's RSS
                  before, after each quarter, and after

(How long a job waits for its first step is benchmarks/job_latency.py.)

Everything is bounded in count and by --time-budget; the server is stopped at the end,
also on error or Ctrl-C. Results: a table on stdout and JSON at --out.

    .venv/bin/python benchmarks/sampling.py
    .venv/bin/python benchmarks/sampling.py --warm 20 --clients 16 --per-client 2   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The same OpenMP policy `ganforge serve` sets for itself, so floor and server compare fairly.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    HOST,
    Budget,
    ServedRun,
    pct,
    proc_cpu_seconds,
    summary,
    wait_job,
)
from benchmarks._sampling_parts import Floor, HttpLoad, png_pixel_diff  # noqa: E402
from benchmarks._sampling_report import report  # noqa: E402
from gan_core import inference  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--train-steps",
        type=int,
        default=2,
        help="steps of the setup job (a checkpoint at each of the last two)",
    )
    ap.add_argument(
        "--train-batch",
        type=int,
        default=16,
        help="setup job's batch size (model size does not depend on it)",
    )
    ap.add_argument(
        "--rounds", type=int, default=4, help="interleaved floor/HTTP rounds for (a)/(b)"
    )
    ap.add_argument("--warm", type=int, default=40, help="warm HTTP requests in total for (b)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=3, help="requests per client in (d)")
    ap.add_argument("--repeat", type=int, default=100, help="identical requests in (e), each kind")
    ap.add_argument("--naive", type=int, default=6, help="load-per-request calls in (f)")
    ap.add_argument(
        "--memory-requests",
        type=int,
        default=1000,
        help="distinct-seed requests by --clients clients in (h), RSS before and after",
    )
    ap.add_argument("--time-budget", type=float, default=1200, help="seconds for the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (and server log)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sampling.json")
    args = ap.parse_args(argv)

    budget = Budget(args.time_budget)
    out: dict = {
        "benchmark": "sampling",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    seed_counter = iter(range(1_000_000, 10_000_000))  # every render gets a seed never used before
    floor: Floor | None = None
    with ServedRun(out, args.out, "sampling", keep=args.keep) as run:
        try:
            client, auth, t_ready = run.start(budget)
            server, data_dir = run.server, run.data_dir
            assert server is not None
            port = server.port
            out["auth"] = bool(auth)
            print(
                f"server up and ready (worker heartbeat seen) in {t_ready:.1f}s on {HOST}:{port}; "
                f"data dir {data_dir}",
                flush=True,
            )

            # ---- the checkpoint, registered through the real path
            cfg = {
                "dataset": "shapes",
                "image_size": 32,
                "steps": args.train_steps,
                "batch_size": args.train_batch,
                "checkpoint_every": max(1, args.train_steps - 1),
                "keep_checkpoints": 5,
                "g_width": 64,  # the widths docs/benchmarks.md's figures were measured at
                "d_width": 64,
            }  # default latent, EMA
            r = client.post("/v1/jobs", json={"name": "bench-setup", "config": cfg})
            r.raise_for_status()
            setup = wait_job(client, r.json()["id"], budget, limit=600)
            if setup["status"] != "succeeded":
                raise RuntimeError(f"setup job {setup['status']}: {setup['error']}")
            job_id = setup["id"]
            ckpts = client.get(f"/v1/jobs/{job_id}/checkpoints").raise_for_status().json()["items"]
            if len(ckpts) < 2:
                raise RuntimeError(f"want two checkpoints, got {[c['step'] for c in ckpts]}")
            ck_a, ck_b = (
                ckpts[0],
                ckpts[1],
            )  # newest (main subject), an older one (cold on warm process)
            ckpt_dir = (
                data_dir / "store" / "jobs" / job_id / "checkpoints" / f"step-{ck_a['step']:08d}"
            )
            assert ckpt_dir.is_dir(), ckpt_dir
            url_a = f"/v1/jobs/{job_id}/checkpoints/{ck_a['id']}/samples.png"
            url_b = f"/v1/jobs/{job_id}/checkpoints/{ck_b['id']}/samples.png"
            print(
                f"job {job_id} trained; checkpoints {[c['step'] for c in ckpts]}; subject {ckpt_dir}",
                flush=True,
            )

            server_threads = server.threads()
            if server_threads:
                torch.set_num_threads(server_threads)
            out["env"] = {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "torch_threads_floor": torch.get_num_threads(),
                "torch_threads_server": server_threads,
                "loadavg_start": list(os.getloadavg()),
                "omp_env": {
                    k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "GOMP_"))
                },
            }
            print(
                f"torch threads: server {server_threads}, floor {torch.get_num_threads()}; "
                f"load {os.getloadavg()}",
                flush=True,
            )

            load = HttpLoad(client, port, auth)
            http = load.get

            # ---- (c1) cold: the first samples request this server process ever serves
            seed0 = next(seed_counter)
            t_cold_first, resp0 = http(url_a, seed0)
            # The floor's generator: the same weights (EMA) as the server's; its fast path in the
            # server's mode.
            mode = inference.resolve_mode(os.environ.get("GANFORGE_SAMPLE_PRECISION", "auto"))
            floor = Floor(ckpt_dir, mode)
            out["server_mode"] = mode

            _, floor_bytes0 = floor(seed0)
            _, fast_bytes0 = floor(seed0, fast=True)
            identical = fast_bytes0 == resp0.content  # the service renders what its fast path does
            diff = png_pixel_diff(floor_bytes0, resp0.content)
            out["server_vs_fp32_floor_pixels"] = diff
            print(
                f"(c) cold first request {t_cold_first * 1000:.0f} ms; PNG identical to the "
                f"in-process fast path ({mode}): {identical}; against the fp32 floor: mean "
                f"{diff['mean']:.3f}/255, max {diff['max']}",
                flush=True,
            )
            for _ in range(2):  # warm both sides
                floor(next(seed_counter))
                floor(next(seed_counter), fast=True)
                http(url_a, next(seed_counter))

            # ---- (a)+(b) floor vs warm HTTP, interleaved
            floor_t: list[float] = []
            warm_t: list[float] = []
            floor_cpu = server_cpu = 0.0  # CPU seconds spent by the floor / by the server process
            spid = server.popen.pid  # uvicorn serves in the `serve` process itself
            per_round = max(1, args.warm // args.rounds)
            for rnd in range(args.rounds):
                budget.check("floor/warm rounds")
                c0 = time.process_time()
                for _ in range(per_round):
                    floor_t.append(floor(next(seed_counter))[0])
                floor_cpu += time.process_time() - c0
                c0 = proc_cpu_seconds(spid)
                for _ in range(per_round):
                    dt, resp = http(url_a, next(seed_counter))
                    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
                    warm_t.append(dt)
                server_cpu += proc_cpu_seconds(spid) - c0
                print(
                    f"  round {rnd + 1}/{args.rounds}: floor p50 {pct(floor_t, 50) * 1000:.0f} ms, "
                    f"warm p50 {pct(warm_t, 50) * 1000:.0f} ms",
                    flush=True,
                )
            out["floor"], out["warm"] = summary(floor_t), summary(warm_t)
            out["floor"]["cpu_s_per_render"] = floor_cpu / len(floor_t)
            out["warm"]["server_cpu_s_per_request"] = server_cpu / len(warm_t)

            # for information: the same floor on this process's main thread
            c0 = time.process_time()
            main_t = [floor.render_here(next(seed_counter))[0] for _ in range(per_round)]
            out["floor_main_thread"] = summary(main_t)
            out["floor_main_thread"]["cpu_s_per_render"] = (time.process_time() - c0) / len(main_t)
            print(
                f"  floor on the main thread instead: p50 {pct(main_t, 50) * 1000:.0f} ms",
                flush=True,
            )

            # ---- (c2) cold on a second checkpoint, process warm
            budget.check("cold second checkpoint")
            t_cold_b, _ = http(url_b, next(seed_counter))
            out["cold"] = {
                "first_request_in_process_ms": t_cold_first * 1000,
                "new_checkpoint_warm_process_ms": t_cold_b * 1000,
            }
            print(
                f"(c) cold request on a second checkpoint (warm process) {t_cold_b * 1000:.0f} ms",
                flush=True,
            )

            # ---- (d) concurrent clients vs floor single-thread throughput (before and after)
            budget.check("concurrency")
            k_floor = max(4, min(args.clients * args.per_client // 2, 16))
            thr_before = floor.throughput(seed_counter, k_floor)
            fast_before = floor.throughput(seed_counter, k_floor, fast=True)
            seeds = [
                [next(seed_counter) for _ in range(args.per_client)] for _ in range(args.clients)
            ]
            lat, errors, wall, conc_cpu = load.concurrent(url_a, seeds, budget, spid)
            fast_after = floor.throughput(seed_counter, k_floor, fast=True)
            thr_after = floor.throughput(seed_counter, k_floor)
            thr_floor = (thr_before + thr_after) / 2
            thr_fast = (fast_before + fast_after) / 2
            thr_conc = len(lat) / wall
            out["concurrent"] = {
                "clients": args.clients,
                "requests": len(lat),
                "errors": errors,
                "wall_s": wall,
                "throughput_rps": thr_conc,
                "latency": summary(lat) if lat else None,
                "floor_throughput_rps_before": thr_before,
                "floor_throughput_rps_after": thr_after,
                "floor_throughput_rps": thr_floor,
                "ratio_vs_floor": thr_conc / thr_floor,
                "fast_floor_throughput_rps": thr_fast,
                "ratio_vs_fast_floor": thr_conc / thr_fast,
                "server_cpu_s_per_request": conc_cpu / max(1, len(lat)),
                "floor_cpu_s_per_render": statistics.fmean(floor.cpu_per_render),
                "cpu_efficiency_vs_floor": statistics.fmean(floor.cpu_per_render)
                / (conc_cpu / max(1, len(lat))),
            }
            print(
                f"(d) {args.clients} clients: {thr_conc:.2f} req/s vs floor {thr_floor:.2f} req/s "
                f"(before {thr_before:.2f}, after {thr_after:.2f}); fast floor {thr_fast:.2f} "
                f"req/s; errors {len(errors)}",
                flush=True,
            )

            # ---- (e) repeated identical request (PNG cache) and conditional (304)
            budget.check("repeat")
            seed_r = next(seed_counter)
            _, first = http(url_a, seed_r)  # fills the PNG cache
            etag = first.headers["etag"]
            rep, rep304, health = [], [], []
            for _ in range(args.repeat):  # interleaved, so load drifts hit all three alike
                dt, resp = http(url_a, seed_r)
                assert resp.status_code == 200 and resp.content == first.content
                rep.append(dt)
                dt, resp = http(url_a, seed_r, headers={"If-None-Match": etag})
                assert resp.status_code == 304, resp.status_code
                rep304.append(dt)
                t = time.perf_counter()  # the HTTP stack's own floor: a route with no auth, no DB
                client.get("/healthz").raise_for_status()
                health.append(time.perf_counter() - t)
            out["repeat_png_cache"], out["repeat_304"] = summary(rep), summary(rep304)
            out["healthz_baseline"] = summary(health)
            print(
                f"(e) repeated: p50 {pct(rep, 50) * 1000:.2f} ms; If-None-Match 304: "
                f"p50 {pct(rep304, 50) * 1000:.2f} ms; /healthz p50 {pct(health, 50) * 1000:.2f} ms",
                flush=True,
            )

            # ---- (f) naive handler: load the checkpoint on every call, interleaved with the floor
            budget.check("naive")
            naive_t, floor_t2 = [], []
            for _ in range(args.naive):
                naive_t.append(floor(next(seed_counter), load=True)[0])
                floor_t2.append(floor(next(seed_counter))[0])
            out["naive"] = summary(naive_t)
            out["naive"]["floor_interleaved"] = summary(floor_t2)
            print(
                f"(f) naive load-per-request p50 {pct(naive_t, 50) * 1000:.0f} ms vs interleaved floor "
                f"p50 {pct(floor_t2, 50) * 1000:.0f} ms",
                flush=True,
            )

            # ---- (h) memory: RSS of the server before and after many distinct renders
            if args.memory_requests:
                budget.check("memory")
                rss = load.memory(
                    url_a, seed_counter, args.memory_requests, args.clients, budget, spid
                )
                out["memory"] = {
                    "requests": args.memory_requests,
                    "clients": args.clients,
                    "rss_mb": rss,
                    "rss_growth_mb": rss[-1] - rss[0],
                }
                print(
                    f"(h) server RSS over {args.memory_requests} distinct renders: "
                    + " -> ".join(f"{v:.0f}" for v in rss)
                    + " MB",
                    flush=True,
                )

            out["png_identical_to_in_process_fast_path"] = identical
            out["env"]["loadavg_end"] = list(os.getloadavg())
            report(out, mode)
        finally:
            if floor is not None:
                floor.close()
            out["wall_seconds"] = args.time_budget - budget.left()
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
