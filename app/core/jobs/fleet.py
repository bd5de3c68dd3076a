"""What the live workers offer: how many devices each trains a job on (their heartbeat rows,
written by worker.sweep), so that a job on N devices is refused when no worker could ever take
it and says why while it waits."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.jobs.queue import job_devices
from app.core.models import Job, JobStatus, Worker
from app.core.settings import Settings


def live_devices(session: Session, settings: Settings) -> list[int]:
    """The devices of each worker whose heartbeat is at most ``worker_seen_seconds`` old."""
    since = utcnow() - timedelta(seconds=settings.worker_seen_seconds)
    rows = session.scalars(select(Worker.devices).where(Worker.last_seen >= since))
    return [devices or 1 for devices in rows]  # a row from before workers announced: one


def queued_reason(job: Job, live: list[int]) -> str | None:
    """Why a queued job is waiting for a worker that is not there (None: one that fits is
    live, and it waits its turn; or the job is not queued)."""
    if job.status != JobStatus.queued:
        return None
    devices = job_devices(job.config)
    if not live:
        return "no worker is running (none has sent a heartbeat lately); it waits for one"
    if max(live) < devices:
        return (
            f"it needs a worker with {devices} devices and the live workers have at most "
            f"{max(live)}; it waits for one (GANFORGE_WORKER_DEVICES)"
        )
    return None
