"""A job's events for one watcher: the job as it changes, and each checkpoint once it is final.

Every change a watcher should see raises the job's ``version`` (progress, status, a scored
checkpoint; see app.core.jobs.runs), and a checkpoint becomes final with the version of that
change. So the version is the event id: events go out in increasing id, and a watcher that
reconnects with the last id it saw (``Last-Event-ID``) catches up with every checkpoint
finalised since, then the job's current state if it moved, with nothing repeated and no
checkpoint lost. Job events are snapshots, not a log: intermediate progress and any status
the job has already left are superseded, not replayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select

from app.core.db import session_scope
from app.core.errors import NotFound
from app.core.jobs import fleet
from app.core.jobs.records import get_job
from app.core.models import FINISHED, Checkpoint, Job, JobStatus
from app.core.settings import Settings


@dataclass(frozen=True)
class Event:
    kind: str  # "job" | "checkpoint" | "deleted" | "keepalive"
    id: int | None = None
    job: Job | None = None
    checkpoint: Checkpoint | None = None
    best_id: str | None = None  # the job's best checkpoint when the event was read
    live_devices: list[int] | None = None  # a queued job's: what the live workers offer


class JobEvents:
    """Iterate to get a job's events from ``last_event_id`` on (or from its current state)."""

    def __init__(
        self,
        settings: Settings,
        *,
        job_id: str,
        owner_id: str | None,
        last_event_id: int | None = None,
    ):
        self.settings, self.job_id, self.owner_id = settings, job_id, owner_id
        self.last = last_event_id
        self.live: list[int] | None = None

    def _read(self, after: int | None) -> tuple[Job, list[Checkpoint]]:
        with session_scope(self.settings.resolved_database_url) as s:
            job = get_job(s, job_id=self.job_id, owner_id=self.owner_id)
            if job.status == JobStatus.queued:  # why it waits, as of this read
                self.live = fleet.live_devices(s, self.settings)
            ckpts = (
                []
                if after is None
                else list(
                    s.scalars(
                        select(Checkpoint)
                        .where(Checkpoint.job_id == self.job_id, Checkpoint.event_version > after)
                        .order_by(Checkpoint.event_version)
                    )
                )
            )
            s.expunge_all()  # read after the session closes
        return job, ckpts

    async def first(self) -> tuple[Job, list[Checkpoint]]:
        """The first read: NotFound here, before the stream starts, for a job that is not there."""
        return await asyncio.to_thread(self._read, self.last)

    async def stream(self, first: tuple[Job, list[Checkpoint]]) -> AsyncIterator[Event]:
        job, ckpts = first
        interval, keepalive = (
            self.settings.progress_interval,
            self.settings.events_keepalive_seconds,
        )
        last_sent = time.monotonic()
        while True:
            for ckpt in ckpts:
                yield Event(
                    "checkpoint",
                    ckpt.event_version,
                    job=job,  # whose kind says what the checkpoint links
                    checkpoint=ckpt,
                    best_id=job.best_checkpoint_id,
                )
                self.last = ckpt.event_version
                last_sent = time.monotonic()
            if self.last is None or job.version > self.last:
                yield Event("job", job.version, job=job, live_devices=self.live)
                self.last = job.version
                last_sent = time.monotonic()
            if job.status in FINISHED:
                return
            await asyncio.sleep(interval)
            if time.monotonic() - last_sent >= keepalive:
                yield Event("keepalive")
                last_sent = time.monotonic()
            try:
                job, ckpts = await asyncio.to_thread(self._read, self.last)
            except NotFound:
                yield Event("deleted")
                return
