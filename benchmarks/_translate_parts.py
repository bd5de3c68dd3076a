"""Parts of benchmarks/translate_speed.py: the distinct inputs it posts, the floor every
HTTP figure is a ratio against (the translator called directly, on a thread), and the
printed report."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from app.core.serving.image_input import ImageLimits, decode, open_image
from app.core.serving.translating import image_png
from gan_core.data.pairs import load_pairs
from gan_core.translation.inference import load_translator, prepare_image, translate

NO_CAPS = ImageLimits(max_bytes=1 << 30, max_pixels=1 << 30)


class Inputs:
    """Distinct grey PNGs of one side: shapes-edges' A images, each with its index written
    into its first three pixels (so no two are the same bytes, however many are drawn)."""

    def __init__(self, size: int):
        self.size = size
        self.edges = load_pairs("shapes-edges", image_size=size, seed=0).a.images
        self.next_index = iter(range(1, 1 << 24))

    def png(self, i: int) -> bytes:
        img = self.edges[i % len(self.edges), 0].clone()
        img[0, :3] = torch.tensor([i & 255, (i >> 8) & 255, (i >> 16) & 255], dtype=torch.uint8)
        buf = io.BytesIO()
        Image.fromarray(img.numpy(), "L").save(buf, format="PNG")
        return buf.getvalue()

    @staticmethod
    def blank(size: int) -> bytes:
        buf = io.BytesIO()
        Image.new("L", (size, size), 0).save(buf, format="PNG")
        return buf.getvalue()

    def fresh(self) -> bytes:
        return self.png(next(self.next_index))

    def many(self, k: int) -> list[bytes]:
        return [self.fresh() for _ in range(k)]


class Floor:
    """translate() + image_png of one checkpoint's translator, on a worker thread."""

    def __init__(self, ckpt_dir: Path, channels: int):
        self.G = load_translator(ckpt_dir, "a2b", ema=True)  # what ema=auto resolves to
        self.size, self.channels = self.G.config.image_size, channels  # type: ignore[union-attr]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor")

    def prepare(self, png: bytes) -> torch.Tensor:
        return prepare_image(decode(open_image(png, NO_CAPS)), self.size, self.channels)

    def _here(self, x: torch.Tensor | bytes) -> tuple[float, bytes]:
        t = time.perf_counter()
        if isinstance(x, bytes):  # the posted bytes: decode + prepare too
            x = self.prepare(x)
        data = image_png(translate(self.G, x[None])[0])
        return time.perf_counter() - t, data

    def __call__(self, x: torch.Tensor | bytes) -> tuple[float, float, bytes]:
        """(seconds, CPU seconds of this process, PNG bytes). The process's: torch's other
        intra-op threads work for the call too, and the calling thread only waits."""
        c = time.process_time()
        dt, data = self.pool.submit(self._here, x).result()
        return dt, time.process_time() - c, data

    def throughput(self, xs: list[torch.Tensor]) -> float:
        t = time.perf_counter()
        for x in xs:
            self(x)
        return len(xs) / (time.perf_counter() - t)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _batches(counts: dict | None) -> str:
    """Concurrent requests are batched per model: how, in (d)."""
    if not counts:
        return "not reported (/metrics)"
    batches = sum(v for k, v in counts.items() if k.startswith("batches_"))
    images = sum(v for k, v in counts.items() if k.startswith("images_"))
    one_pass = counts.get("batches_batched", 0.0)
    return (
        f"{batches:.0f} batches, {images / max(batches, 1):.1f} images each, "
        f"{one_pass:.0f} with passes of several images"
    )


def report(out: dict) -> None:
    print(f"\n{'measurement':<44}{'value':<50}ratio / target")
    for size, r in out["sizes"].items():
        fl, sq, cc = r["floor"], r["sequential"], r["concurrent"]
        rows = [
            (
                f"{size}px (a) floor: translate + PNG",
                f"p50 {fl['p50_ms']:.1f} ms, p95 {fl['p95_ms']:.1f} ms, CPU "
                f"{fl['cpu_ms_per_image']:.1f} ms",
                "1.00",
            ),
            (
                "     floor incl. decode of the posted PNG",
                f"p50 {r['floor_from_bytes']['p50_ms']:.1f} ms",
                f"{r['floor_from_bytes']['p50_ms'] / fl['p50_ms']:.2f} (information)",
            ),
            (
                "     (b) sequential HTTP, distinct images",
                f"p50 {sq['p50_ms']:.1f} ms, p95 {sq['p95_ms']:.1f} ms, server CPU "
                f"{sq['server_cpu_ms_per_request']:.1f} ms",
                f"{sq['p50_ms'] / fl['p50_ms']:.2f} (p50)",
            ),
            ("     (c) cold first request", f"{r['cold_first_request_ms']:.0f} ms", ""),
            (
                f"     (d) {cc['clients']} clients throughput",
                f"{cc['throughput_rps']:.2f} req/s vs floor {cc['floor_throughput_rps']:.2f}",
                f"{cc['ratio_vs_floor']:.2f} (target >= 0.9: "
                f"{'met' if cc['target_0.9_met'] else 'NOT met'})",
            ),
            (
                "     (e) repeat (PNG cache) / If-None-Match (412)",
                f"p50 {r['repeat_png_cache']['p50_ms']:.2f} ms / {r['repeat_304']['p50_ms']:.2f} ms",
                "",
            ),
            ("     (d) server's batches (floor: 1 image)", _batches(cc.get("batches")), ""),
            ("     PNG identical to the floor's", str(r["png_identical_to_floor"]), ""),
        ]
        for a, b, c in rows:
            print(f"{a:<44}{b:<50}{c}")
    if out.get("memory"):
        m = out["memory"]
        print(
            f"(h) RSS over {m['requests']} distinct {m['size']}px translations: "
            + " -> ".join(f"{v:.0f}" for v in m["rss_mb"])
            + f" MB (+{m['rss_growth_mb']:.0f} MB, {m['seconds']:.0f}s)"
        )
    env = out["env"]
    print(
        f"torch threads: server {env['torch_threads_server']}, floor {env['torch_threads_floor']};"
        f" load {env['loadavg_start']} -> {env['loadavg_end']}"
    )
