"""Per-owner limits: concurrent jobs, steps per job, stored bytes (sampling: app.core.serving.ratelimit)."""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, InvalidInput, TooLarge
from app.core.models import Checkpoint, Dataset, Job, JobStatus
from app.core.serving.ratelimit import RateLimited
from app.core.settings import Settings
from gan_core.config import TrainConfig
from gan_core.memory import estimate_training_memory


class TooManyJobs(RateLimited):
    pass


def check_new_job(
    session: Session,
    settings: Settings,
    *,
    owner_id: str,
    config: TrainConfig,
    field: str = "config.steps",
) -> None:
    """Refuse a job past the per-job step limit or the owner's concurrent-job limit.

    ``field`` names where the request gave the steps (a resume body has them as ``steps``).
    """
    if config.steps > settings.max_steps_per_job:
        raise InvalidInput(
            f"steps must be <= {settings.max_steps_per_job} (per-job limit)", field=field
        )
    memory = estimate_training_memory(config)
    if memory.total_bytes > settings.max_job_memory_bytes:
        raise InvalidInput(
            f"this config needs {memory.describe()} to train, over GANFORGE_MAX_JOB_MEMORY_BYTES "
            f"({settings.max_job_memory_bytes / (1 << 30):.0f} GiB); lower batch_size, "
            "image_size or the widths",
            field="config",
        )
    active = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
        )
        or 0
    )
    if active >= settings.max_jobs_per_owner:
        raise TooManyJobs(
            f"{active} jobs are queued or running; the limit is {settings.max_jobs_per_owner} "
            "per owner (cancel one or wait)",
            retry_after=30,
        )
    check_storage(session, settings, owner_id=owner_id)


def stored_bytes(session: Session, *, owner_id: str) -> int:
    datasets = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.owner_id == owner_id)
    )
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(Checkpoint.size_bytes), 0))
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.owner_id == owner_id)
    )
    return int(datasets or 0) + int(checkpoints or 0)


def check_storage(session: Session, settings: Settings, *, owner_id: str, adding: int = 0) -> None:
    """Refuse new data once an owner's datasets and checkpoints pass the storage quota."""
    used = stored_bytes(session, owner_id=owner_id)
    if used + adding > settings.max_stored_bytes_per_owner:
        detail = (
            f"storage quota: {used + adding} bytes would exceed the "
            f"{settings.max_stored_bytes_per_owner}-byte limit per owner; delete jobs or datasets"
        )
        if adding:
            raise TooLarge(detail, field="file")
        raise Conflict(detail)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
