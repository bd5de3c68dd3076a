"""The table and ratios of a sampling.py run (benchmarks/sampling.py measures, this reports)."""

from __future__ import annotations


def report(out: dict, mode: str) -> None:
    """The ratios and targets of a run into ``out``, and its table on stdout."""
    clients, env = out["concurrent"]["clients"], out["env"]
    fl, wm = out["floor"], out["warm"]
    out["ratios"] = {
        "warm_p50/floor_p50": wm["p50_ms"] / fl["p50_ms"],
        "warm_p99/floor_p99": wm["p99_ms"] / fl["p99_ms"],
        "concurrent_throughput/floor_throughput": out["concurrent"]["ratio_vs_floor"],
        "concurrent_throughput/fast_floor_throughput": out["concurrent"]["ratio_vs_fast_floor"],
        "naive_p50/floor_p50": out["naive"]["p50_ms"] / out["naive"]["floor_interleaved"]["p50_ms"],
        "cold_first/floor_p50": out["cold"]["first_request_in_process_ms"] / fl["p50_ms"],
        "cold_new_ckpt/floor_p50": out["cold"]["new_checkpoint_warm_process_ms"] / fl["p50_ms"],
    }
    out["targets"] = {
        "concurrent_throughput/floor >= 0.9": out["ratios"][
            "concurrent_throughput/floor_throughput"
        ]
        >= 0.9,
        "repeat p50 <= 2 ms": out["repeat_png_cache"]["p50_ms"] <= 2.0,
        "304 p50 <= 2 ms": out["repeat_304"]["p50_ms"] <= 2.0,
    }
    rows = [
        (
            "(a) floor: sample+png_grid, in-process",
            f"p50 {fl['p50_ms']:.0f} ms, p99 {fl['p99_ms']:.0f} ms (n={fl['n']})",
            "1.00",
        ),
        (
            "    floor on the main thread instead",
            f"p50 {out['floor_main_thread']['p50_ms']:.0f} ms, CPU "
            f"{out['floor_main_thread']['cpu_s_per_render'] * 1000:.0f} ms/render",
            "(information)",
        ),
        (
            "    CPU per render: server / floor",
            f"{wm['server_cpu_s_per_request'] * 1000:.0f} ms / "
            f"{fl['cpu_s_per_render'] * 1000:.0f} ms",
            f"{wm['server_cpu_s_per_request'] / fl['cpu_s_per_render']:.2f}",
        ),
        (
            "(b) warm HTTP, distinct seeds",
            f"p50 {wm['p50_ms']:.0f} ms, p99 {wm['p99_ms']:.0f} ms (n={wm['n']})",
            f"{out['ratios']['warm_p50/floor_p50']:.2f} (p50)  {out['ratios']['warm_p99/floor_p99']:.2f} (p99)",
        ),
        (
            "(c) cold, first request in process",
            f"{out['cold']['first_request_in_process_ms']:.0f} ms",
            f"{out['ratios']['cold_first/floor_p50']:.2f}",
        ),
        (
            "(c) cold, new checkpoint, warm process",
            f"{out['cold']['new_checkpoint_warm_process_ms']:.0f} ms",
            f"{out['ratios']['cold_new_ckpt/floor_p50']:.2f}",
        ),
        (
            f"(d) {clients} clients throughput",
            f"{out['concurrent']['throughput_rps']:.2f} req/s vs floor "
            f"{out['concurrent']['floor_throughput_rps']:.2f}",
            f"{out['ratios']['concurrent_throughput/floor_throughput']:.2f} (target >= 0.9)",
        ),
        (
            f"    CPU per request under {clients} clients",
            f"server {out['concurrent']['server_cpu_s_per_request'] * 1000:.0f} ms "
            f"vs floor {out['concurrent']['floor_cpu_s_per_render'] * 1000:.0f} ms",
            f"floor/server {out['concurrent']['cpu_efficiency_vs_floor']:.2f}",
        ),
        (
            f"    same, against the fast floor ({mode})",
            f"{out['concurrent']['fast_floor_throughput_rps']:.2f} req/s in-process",
            f"{out['ratios']['concurrent_throughput/fast_floor_throughput']:.2f}",
        ),
        *(
            [
                (
                    f"(h) RSS over {out['memory']['requests']} renders",
                    " -> ".join(f"{v:.0f}" for v in out["memory"]["rss_mb"]) + " MB",
                    f"+{out['memory']['rss_growth_mb']:.0f} MB",
                )
            ]
            if out.get("memory")
            else []
        ),
        (
            "(e) repeated identical (PNG cache)",
            f"p50 {out['repeat_png_cache']['p50_ms']:.2f} ms, p99 {out['repeat_png_cache']['p99_ms']:.2f} ms",
            "target p50 <= 2 ms",
        ),
        (
            "(e) If-None-Match -> 304",
            f"p50 {out['repeat_304']['p50_ms']:.2f} ms, p99 {out['repeat_304']['p99_ms']:.2f} ms",
            "target p50 <= 2 ms",
        ),
        (
            "    GET /healthz (HTTP stack only)",
            f"p50 {out['healthz_baseline']['p50_ms']:.2f} ms",
            "(baseline for e)",
        ),
        (
            "(f) naive: load per request",
            f"p50 {out['naive']['p50_ms']:.0f} ms",
            f"{out['ratios']['naive_p50/floor_p50']:.2f}",
        ),
    ]
    print()
    print(f"{'measurement':<42}{'value':<48}ratio to floor / target")
    for a, b, c in rows:
        print(f"{a:<42}{b:<48}{c}")
    print(
        f"\ntorch threads: server {env['torch_threads_server']}, floor "
        f"{env['torch_threads_floor']}; "
        f"targets: {out['targets']}"
    )
