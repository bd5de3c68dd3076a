"""Per-owner and per-job limits: concurrent jobs, steps and checkpoints per job, stored bytes
(sampling: app.core.serving.ratelimit)."""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, InvalidInput, TooLarge
from app.core.jobs import fleet
from app.core.jobs.queue import job_devices
from app.core.models import Checkpoint, Dataset, Job, JobStatus, Translation
from app.core.serving.ratelimit import RateLimited
from app.core.settings import Settings
from gan_core.jobconfig import AnyConfig
from gan_core.memory import estimate_training_memory


class TooManyJobs(RateLimited):
    pass


def check_new_job(
    session: Session,
    settings: Settings,
    *,
    owner_id: str,
    config: AnyConfig,
    field: str = "config.steps",
    devices_field: str = "config.devices",
    resume: bool = False,
) -> None:
    """Refuse a job past the per-job step or checkpoint limits or the owner's concurrent-job
    limit.

    ``field`` names where the request gave the steps (a resume body has them as ``steps``);
    ``resume``: the job exists already (see ``check_checkpoints``).
    """
    if config.steps > settings.max_steps_per_job:
        raise InvalidInput(
            f"steps must be <= {settings.max_steps_per_job} (per-job limit)", field=field
        )
    check_checkpoints(settings, config, resume=resume)
    devices = getattr(config, "devices", 1)
    check_devices(session, settings, owner_id=owner_id, devices=devices, field=devices_field)
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


def check_devices(
    session: Session,
    settings: Settings,
    *,
    owner_id: str,
    devices: int,
    field: str = "config.devices",
) -> None:
    """A job on several devices: 422 when it is over the owner's device limit by itself, or
    when workers are live and none has that many (with none live it waits, saying why:
    app.core.jobs.fleet); 429 while the owner's queued and running jobs hold the rest."""
    limit = settings.max_devices_per_owner
    if devices > limit:
        raise InvalidInput(
            f"devices must be <= {limit} (GANFORGE_MAX_DEVICES_PER_OWNER); got {devices}",
            field=field,
        )
    live = fleet.live_devices(session, settings)
    if devices > 1 and live and max(live) < devices:
        raise InvalidInput(
            f"devices: no worker has {devices} devices (the live workers have at most "
            f"{max(live)}); ask for at most {max(live)}, or start a worker with "
            f"GANFORGE_WORKER_DEVICES={devices}",
            field=field,
        )
    active = session.scalars(
        select(Job.config).where(
            Job.owner_id == owner_id, Job.status.in_([JobStatus.queued, JobStatus.running])
        )
    )
    held = sum(job_devices(c) for c in active)
    if held + devices > limit:
        raise TooManyJobs(
            f"the owner's queued and running jobs hold {held} devices; with {devices} more "
            f"that is over the limit of {limit} per owner (GANFORGE_MAX_DEVICES_PER_OWNER)",
            retry_after=30,
        )


def check_checkpoints(settings: Settings, config: AnyConfig, *, resume: bool = False) -> None:
    """Bound the checkpoints (each written, scored and announced) one job makes.

    A new job's ``checkpoint_every`` must be at least GANFORGE_MIN_CHECKPOINT_EVERY, and
    ``ceil(steps / checkpoint_every)`` at most GANFORGE_MAX_CHECKPOINTS_PER_JOB. A resume
    keeps its job's ``checkpoint_every`` (it is not refused for a floor raised since) and is
    held to the cap over its new total of steps.
    """
    every, cap = config.checkpoint_every, settings.max_checkpoints_per_job
    field = "config.checkpoint_every"
    if not resume and every < settings.min_checkpoint_every:
        raise InvalidInput(
            f"checkpoint_every must be >= {settings.min_checkpoint_every} on this server "
            f"(GANFORGE_MIN_CHECKPOINT_EVERY); got {every}",
            field=field,
        )
    count = math.ceil(config.steps / every)
    if count > cap:
        raise InvalidInput(
            f"{config.steps} steps with checkpoint_every {every} make {count} checkpoints; "
            f"at most {cap} per job (GANFORGE_MAX_CHECKPOINTS_PER_JOB): ceil(steps / "
            f"checkpoint_every) must be <= {cap}, e.g. checkpoint_every >= "
            f"{math.ceil(config.steps / cap)} or steps <= {cap * every}",
            field=field,
        )


def stored_bytes(session: Session, *, owner_id: str) -> int:
    """An owner's datasets, checkpoints and folder translations (their unpacked inputs and
    result.zip), in bytes."""
    datasets = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.owner_id == owner_id)
    )
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(Checkpoint.size_bytes), 0))
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.owner_id == owner_id)
    )
    translations = session.scalar(
        select(
            func.coalesce(
                func.sum(
                    func.coalesce(Translation.input_bytes, 0)
                    + func.coalesce(Translation.result_bytes, 0)
                ),
                0,
            )
        ).where(Translation.owner_id == owner_id)
    )
    return int(datasets or 0) + int(checkpoints or 0) + int(translations or 0)


def check_storage(session: Session, settings: Settings, *, owner_id: str, adding: int = 0) -> None:
    """Refuse new data once an owner's datasets, checkpoints and folder translations pass the
    storage quota: 413 on ``file`` for an upload that would pass it (``adding`` its bytes),
    409 for new work once it is full."""
    used = stored_bytes(session, owner_id=owner_id)
    if used + adding > settings.max_stored_bytes_per_owner:
        detail = (
            f"storage quota: {used + adding} bytes would exceed the "
            f"{settings.max_stored_bytes_per_owner}-byte limit per owner "
            "(GANFORGE_MAX_STORED_BYTES_PER_OWNER); delete jobs, datasets or translations"
        )
        if adding:
            raise TooLarge(detail, field="file")
        raise Conflict(detail)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
