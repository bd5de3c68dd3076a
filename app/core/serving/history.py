"""A job's history: its loss series (bounded; with the augmentation probability p where the
run augments), and its checkpoints with their scores.

The worker appends one bucket per progress report (about one a second). When a job has
more than twice ``points`` buckets, neighbours are merged pairwise (means weighted by the
reports in each), so a run of any length keeps between ``points`` and ``2 * points``
buckets, evenly coarse, without the table growing with the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.jobs.records import get_job
from app.core.models import Checkpoint, Job, JobMetric


def append(session: Session, *, job_id: str, progress: Any, points: int) -> None:
    """Add one progress report to the job's loss history (the caller commits)."""
    # A resumed run reports again from its checkpoint's step: what came after it is replaced.
    session.execute(
        delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step_to >= progress.step)
    )
    losses = progress.losses or {}
    session.add(
        JobMetric(
            job_id=job_id,
            step_from=progress.step,
            step_to=progress.step,
            at=utcnow(),
            d_loss=losses.get("d"),
            g_loss=losses.get("g"),
            images_per_sec=progress.images_per_sec,
            augment_p=progress.augment_p,
            reports=1,
        )
    )
    session.flush()
    count = session.scalar(select(func.count()).where(JobMetric.job_id == job_id)) or 0
    if count > 2 * points:
        _compact(session, job_id)


def _mean(a: float | None, wa: int, b: float | None, wb: int) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return (a * wa + b * wb) / (wa + wb)


def _compact(session: Session, job_id: str) -> None:
    rows = list(
        session.scalars(
            select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step_to)
        )
    )
    merged = []
    for i in range(0, len(rows) - 1, 2):
        a, b = rows[i], rows[i + 1]
        merged.append(
            JobMetric(
                job_id=job_id,
                step_from=a.step_from,
                step_to=b.step_to,
                at=b.at,
                d_loss=_mean(a.d_loss, a.reports, b.d_loss, b.reports),
                g_loss=_mean(a.g_loss, a.reports, b.g_loss, b.reports),
                images_per_sec=_mean(a.images_per_sec, a.reports, b.images_per_sec, b.reports),
                augment_p=_mean(a.augment_p, a.reports, b.augment_p, b.reports),
                reports=a.reports + b.reports,
            )
        )
    keep_last = rows[-1:] if len(rows) % 2 else []
    session.execute(
        delete(JobMetric).where(
            JobMetric.job_id == job_id,
            JobMetric.id.in_([r.id for r in rows[: len(rows) - len(keep_last)]]),
        )
    )
    session.add_all(merged)
    session.flush()


@dataclass(frozen=True)
class History:
    job: Job
    train: list[JobMetric]  # oldest first
    checkpoints: list[Checkpoint]  # every checkpoint the run wrote, pruned ones too; oldest first


def job_history(session: Session, *, job_id: str, owner_id: str | None = None) -> History:
    """The job's loss buckets and all its checkpoints (NotFound for another owner's job)."""
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    train = list(
        session.scalars(
            select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step_to)
        )
    )
    ckpts = list(
        session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
        )
    )
    return History(job, train, ckpts)
