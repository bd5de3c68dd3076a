"""How long a job waits for its first training step, through the real service.

It starts the real server (`ganforge serve`, embedded mode: SQLite, local store, its own
worker) on 127.0.0.1 with a temp data dir, runs one short setup job so that the worker is
warm (as it is in a service that has run a job before), and then, --reps times each:

  POST /v1/jobs, then poll GET /v1/jobs/{id} until progress.step >= 1 (the client's view),
  and the job's own first_step_at - created_at, split at started_at (queue pickup vs setup
  + step 1)

for a tiny model, whose first step costs ~nothing (what the service adds: queue pickup,
claim, data, model build), and for the default DCGAN (one real CPU step on top). Then the
same setup + first steps in a fresh process without the service, for attribution.

    .venv/bin/python benchmarks/job_latency.py            # ~1 min
    .venv/bin/python benchmarks/job_latency.py --reps 5

Target: POST -> first step < 2 s with the tiny model. Results: a table on stdout, JSON at --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    ATTRIBUTION,
    Budget,
    ServedRun,
    parse_ts,
    wait_job,
)

CONFIGS = {
    "tiny": {
        "dataset": "shapes",
        "image_size": 32,
        "steps": 1,
        "g_width": 8,
        "d_width": 8,
        "batch_size": 8,
    },
    # the config's defaults, at the widths docs/benchmarks.md's figures were measured at
    "default": {"dataset": "shapes", "image_size": 32, "steps": 1, "g_width": 64, "d_width": 64},
}


def first_step(client: httpx.Client, budget: Budget, label: str, cfg: dict, i: int) -> dict:
    """One POST, timed until the client sees step 1; the job's own timestamps as well."""
    budget.check("post-to-first-step")
    t0 = time.perf_counter()
    r = client.post("/v1/jobs", json={"name": f"bench-latency-{label}-{i}", "config": cfg})
    r.raise_for_status()
    jid = r.json()["id"]
    seen = None
    while seen is None:
        job = client.get(f"/v1/jobs/{jid}").raise_for_status().json()
        if job["progress"]["step"] >= 1:
            seen = time.perf_counter() - t0
        elif job["status"] in ("failed", "canceled"):
            raise RuntimeError(f"latency job {job['status']}: {job['error']}")
        elif time.perf_counter() - t0 > 300:
            raise RuntimeError("latency job made no step in 300 s")
        else:
            time.sleep(0.02)
    job = wait_job(client, jid, budget, limit=300)
    created, started, first = (
        parse_ts(job[k]) for k in ("created_at", "started_at", "first_step_at")
    )
    return {
        "client_post_to_step_seen_s": seen,
        "server_created_to_first_step_s": (first - created).total_seconds(),
        "created_to_started_s (queue pickup)": (started - created).total_seconds(),
        "started_to_first_step_s (setup + step 1)": (first - started).total_seconds(),
    }


def attribution(budget: Budget) -> dict:
    """The same setup and first steps in a fresh process, without the service."""
    budget.check("attribution")
    attr = subprocess.run(
        [sys.executable, "-c", ATTRIBUTION],
        capture_output=True,
        text=True,
        timeout=max(10.0, min(300.0, budget.left())),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if attr.returncode != 0:
        return {"error": attr.stderr[-2000:]}
    return json.loads(attr.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=3, help="POSTs per model")
    ap.add_argument("--time-budget", type=float, default=600, help="seconds for the whole run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/job_latency.json")
    args = ap.parse_args(argv)

    budget = Budget(args.time_budget)
    out: dict = {"benchmark": "job_latency", "args": {"reps": args.reps}}
    with ServedRun(out, args.out, "latency") as run:
        client, _, _ = run.start(budget)
        # the worker warm: it has run a job before
        warm = {"dataset": "shapes", "image_size": 32, "steps": 2, "batch_size": 16}
        r = client.post("/v1/jobs", json={"name": "bench-warm-up", "config": warm})
        setup = wait_job(client, r.raise_for_status().json()["id"], budget, limit=600)
        if setup["status"] != "succeeded":
            raise RuntimeError(f"warm-up job {setup['status']}: {setup['error']}")

        for label, cfg in CONFIGS.items():
            reps = []
            for i in range(args.reps):
                row = first_step(client, budget, label, cfg, i)
                reps.append(row)
                print(
                    f"{label} rep {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
                    flush=True,
                )
            out[label] = {
                "config": cfg,
                "reps": reps,
                "median_client_s": statistics.median(r["client_post_to_step_seen_s"] for r in reps),
                "median_server_s": statistics.median(
                    r["server_created_to_first_step_s"] for r in reps
                ),
            }
        out["attribution"] = a = attribution(budget)
        if "error" not in a:
            print(
                f"fresh process, no service: load 'shapes' {a['load_dataset_shapes_s']:.2f}s, "
                f"train() to step-1 report {a['train_call_to_step1_report_s']:.2f}s, then "
                f"{a['step2_s']:.2f}s/{a['step3_s']:.2f}s per step"
            )
        out["target_met"] = out["tiny"]["median_client_s"] < 2.0
        print()
        for label, what in (("tiny", "tiny model"), ("default", "default DCGAN")):
            p = out[label]
            print(
                f"POST -> first step, {what:<14} client {p['median_client_s']:.2f} s, server "
                f"{p['median_server_s']:.2f} s (median of {len(p['reps'])})"
            )
        print(f"target (tiny < 2 s): {'met' if out['target_met'] else 'NOT met'}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
