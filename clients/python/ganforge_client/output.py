"""What ``ganforge-client jobs | datasets`` print: JSON, tables, a job, its bar or lines.

The presentation half of ganforge_client.cli (which holds the verbs); plain text on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ganforge_client import Checkpoint, Job


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress_text(job: Job) -> str:
    """d=… g=… img/s eta: the job's latest report, for a bar's postfix or a log line."""
    p = job.progress
    parts = [f"{k}={v:.3f}" for k, v in (p.losses or {}).items()]
    if p.images_per_sec:
        parts.append(f"{p.images_per_sec:.0f} img/s")
    if job.status == "running":
        if p.phase and p.phase != "training":  # say why step and ETA stand still
            parts.append(p.phase.replace("_", " "))
        parts.append(f"eta {duration(p.eta_seconds)}")
    return " ".join(parts)


def checkpoint_text(ckpt: Checkpoint) -> str:
    fd = ckpt.scores.fd if ckpt.scores is not None else None
    score = f", FD {fd:.3f}" if fd is not None else f", scores {ckpt.score_status}"
    return f"checkpoint {ckpt.id} at step {ckpt.step}{score}{' (best)' if ckpt.best else ''}"


def show_job(job: Job) -> None:
    p = job.progress
    asked = " (cancel requested)" if job.cancel_requested and not job.finished else ""
    print(f"{job.id}  {job.name}  {job.status}{asked}")
    print(f"  step {p.step}/{p.total_steps}, epoch {p.epoch:.2f}  {progress_text(job)}".rstrip())
    print(f"  dataset {job.config.get('dataset', '?')}, {job.config.get('image_size', '?')} px")
    times = [f"created {when(job.created_at)}"]
    times += [f"started {when(job.started_at)}"] if job.started_at else []
    times += [f"finished {when(job.finished_at)}"] if job.finished_at else []
    print(f"  {', '.join(times)} (UTC)")
    if job.best_checkpoint_id:
        print(f"  best checkpoint {job.best_checkpoint_id} (FD {job.best_fd:.3f})")
    if job.error:
        print(f"  error: {job.error}")


class Bar:
    """A tqdm bar of the job's steps, its losses and the server's ETA in the postfix."""

    def __init__(self, job: Job):
        from tqdm import tqdm

        self.bar = tqdm(
            total=job.progress.total_steps or None,
            initial=job.progress.step,
            unit="step",
            desc=job.id,
            file=sys.stdout,
            dynamic_ncols=True,
            mininterval=0.1,
        )

    def job(self, job: Job) -> None:
        p = job.progress
        if p.total_steps and p.total_steps != self.bar.total:
            self.bar.total = p.total_steps
        self.bar.set_postfix_str(
            " ".join(x for x in (job.status, progress_text(job)) if x), refresh=False
        )
        if p.step > self.bar.n:
            self.bar.update(p.step - self.bar.n)  # update(), so tqdm's own rate stays right
        else:
            self.bar.n = p.step
            self.bar.refresh()

    def checkpoint(self, ckpt: Checkpoint) -> None:
        self.bar.write(checkpoint_text(ckpt), file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


class Lines:
    """Plain lines for a log: each status change and checkpoint, progress every few seconds."""

    def __init__(self, job: Job, every: float = 5.0):
        self.every, self.status, self.printed = every, "", 0.0

    def job(self, job: Job) -> None:
        now = time.monotonic()
        if job.status != self.status or now - self.printed >= self.every:
            p = job.progress
            text = f"{job.id} {job.status} step {p.step}/{p.total_steps} {progress_text(job)}"
            print(text.rstrip(), flush=True)
            self.status, self.printed = job.status, now

    def checkpoint(self, ckpt: Checkpoint) -> None:
        print(checkpoint_text(ckpt), flush=True)

    def close(self) -> None:
        pass


def dataset_line(ds: Any) -> str:
    bits = [f"{ds.num_images} images" if ds.num_images is not None else None]
    bits += [f"{ds.image_size} px" if ds.image_size else None]
    bits += [f"{ds.channels} channel(s)" if ds.channels else None]
    bits += [f"{ds.num_classes} classes" if ds.num_classes else None]
    pairing = getattr(ds, "pairing", None)
    bits += [f"{pairing}, {ds.val_size} held out" if pairing and ds.val_size else pairing]
    return ", ".join(b for b in bits if b)
