"""Job records and their state transitions: the API's and the worker's shared truth.

queued -> running -> succeeded | failed | canceled;  queued -> canceled;
failed | canceled -> queued (resume);  running with a stale lease -> queued (recovery).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.models import FINISHED, Checkpoint, Dataset, Job, JobStatus
from gan_core.config import TrainConfig


def _request_hash(name: str, config: TrainConfig) -> str:
    body = json.dumps({"name": name, "config": config.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def find_idempotent(session: Session, *, owner_id: str | None, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def create_job(
    session: Session,
    *,
    name: str,
    config: TrainConfig,
    owner_id: str | None = None,
    idempotency_key: str | None = None,
    dataset: Dataset | None = None,
) -> tuple[Job, bool]:
    """Store a queued job; returns (job, created). A repeated idempotency key returns the first job."""
    digest = _request_hash(name, config)
    if idempotency_key is not None:
        existing = find_idempotent(session, owner_id=owner_id, key=idempotency_key)
        if existing is not None:
            if existing.request_hash != digest:
                raise Conflict(
                    "Idempotency-Key was already used with a different request body",
                    field="Idempotency-Key",
                )
            return existing, False
    job = Job(
        name=name,
        owner_id=owner_id,
        status=JobStatus.queued,
        config=config.model_dump(mode="json"),
        dataset_id=dataset.id if dataset else None,
        idempotency_key=idempotency_key,
        request_hash=digest,
        total_steps=config.steps,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent retry with the same key won the race
        session.rollback()
        return create_job(
            session, name=name, config=config, owner_id=owner_id,
            idempotency_key=idempotency_key, dataset=dataset,
        )
    return job, True


def get_job(session: Session, *, job_id: str, owner_id: str | None = None) -> Job:
    """The job, or NotFound (also for another owner's job: existence is not revealed)."""
    job = session.get(Job, job_id)
    if job is None or (owner_id is not None and job.owner_id != owner_id):
        raise NotFound(f"job {job_id} not found")
    return job


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this API returned", field="cursor") from exc


def list_jobs(
    session: Session,
    *,
    owner_id: str | None = None,
    status: JobStatus | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page:
    """Jobs newest first, keyset-paginated by (created_at, id)."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    if status is not None:
        query = query.where(Job.status == status)
    if cursor:
        stamp, job_id = _decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < stamp, and_(Job.created_at == stamp, Job.id < job_id))
        )
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(rows[-1]) if more and rows else None)


def request_cancel(session: Session, *, job_id: str, owner_id: str | None = None) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its loop reads the flag)."""
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is already {job.status}")
    if job.status == JobStatus.queued:
        job.status, job.finished_at = JobStatus.canceled, utcnow()
    job.cancel_requested = True
    session.flush()
    return job


def resume_job(
    session: Session, *, job_id: str, owner_id: str | None = None, steps: int | None = None
) -> Job:
    """Queue a failed or canceled job again; it continues from its last checkpoint."""
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    if job.status not in (JobStatus.failed, JobStatus.canceled):
        raise Conflict(f"only failed or canceled jobs can be resumed; job {job_id} is {job.status}")
    config = TrainConfig.model_validate(job.config)
    if steps is not None:
        if steps <= job.step:
            raise InvalidInput(
                f"steps must be greater than the {job.step} steps already done", field="steps"
            )
        config = TrainConfig.model_validate({**job.config, "steps": steps})
    job.config = config.model_dump(mode="json")
    job.total_steps = config.steps
    job.status = JobStatus.queued
    job.cancel_requested = False
    job.error = None
    job.finished_at = None
    job.lease_owner = job.lease_expires_at = None
    session.flush()
    return job


def delete_job(session: Session, *, job_id: str, owner_id: str | None = None) -> Job:
    """Delete a job that is not running, with its checkpoint records (files: caller)."""
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    if job.status == JobStatus.running:
        raise Conflict(f"job {job_id} is running; cancel it first")
    if job.status == JobStatus.queued:
        job.status = JobStatus.canceled  # a message still in the queue will find nothing to run
    session.delete(job)
    session.flush()
    return job


# ---------------------------------------------------------------- worker side


def claim_job(session: Session, *, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Atomically take a queued job (or one whose lease went stale); None if someone else has it."""
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.queued,
        and_(Job.status == JobStatus.running, Job.lease_expires_at < now),
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=now,  # of the latest attempt (attempts counts them)
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def renew_lease(session: Session, *, job_id: str, worker_id: str, lease_seconds: float) -> bool | None:
    """Extend our lease; returns the cancel flag, or None if the job is no longer ours."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.running)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def record_progress(session: Session, *, job_id: str, worker_id: str, progress: Any) -> None:
    """Write the loop's latest progress onto the job row (only while we hold it)."""
    values: dict[str, Any] = {
        "step": progress.step,
        "total_steps": progress.total_steps,
        "epoch": progress.epoch,
        "losses": progress.losses,
        "images_per_sec": progress.images_per_sec,
        "eta_seconds": progress.eta_seconds,
        "updated_at": utcnow(),
    }
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.first_step_at.is_(None))
        .values(first_step_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def record_checkpoint(
    session: Session, *, job_id: str, step: int, key: str, size_bytes: int,
    files: dict[str, Any], losses: dict[str, Any] | None, keep: int, worker_id: str | None = None,
) -> Checkpoint | None:
    """Record a checkpoint that has landed, and forget the ones the trainer is about to prune.

    With ``worker_id``, only while that worker holds the job's lease (else None, nothing
    recorded): a run that lost its job to another worker must not add to its records.
    """
    if worker_id is not None:
        # Update the job row first: it is locked until commit, so a concurrent claim waits.
        held = session.execute(
            update(Job).where(Job.id == job_id, Job.lease_owner == worker_id)
            .values(updated_at=utcnow()).execution_options(synchronize_session=False)
        )
        if held.rowcount != 1:
            session.rollback()
            return None
    ckpt = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))
    if ckpt is None:
        ckpt = Checkpoint(job_id=job_id, step=step)
        session.add(ckpt)
    ckpt.path, ckpt.size_bytes, ckpt.files, ckpt.losses = key, size_bytes, files, losses
    ckpt.created_at = utcnow()
    session.flush()
    steps = list(session.scalars(
        select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())
    ))
    # Rows go before files: a listed checkpoint always exists on disk.
    if len(steps) > keep:
        session.execute(
            delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.in_(steps[keep:]))
        )
    session.execute(
        update(Job).where(Job.id == job_id).values(step=max(step, 0), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return ckpt


def finish_job(
    session: Session, *, job_id: str, worker_id: str, status: JobStatus, error: str | None = None,
    step: int | None = None,
) -> bool:
    """Set the final status if we still hold the job; False if it was taken from us."""
    values: dict[str, Any] = {
        "status": status, "error": error, "finished_at": utcnow(), "updated_at": utcnow(),
        "lease_owner": None, "lease_expires_at": None,
    }
    if step is not None:
        values["step"] = step
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == worker_id).values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def unqueue_stale_job(session: Session, *, job_id: str) -> None:
    """Undo requeue_stale_jobs for one job whose message could not be sent (broker down):
    it is stale again, so the next sweep re-queues it and tries to send once more."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued, Job.lease_owner.is_(None))
        .values(status=JobStatus.running, lease_expires_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def requeue_stale_jobs(session: Session) -> list[str]:
    """Put running jobs whose lease expired (their worker died) back in the queue.

    Each job is flipped by a conditional update, so when several workers sweep at once
    exactly one of them re-queues (and re-sends) a given job.
    """
    now = utcnow()
    stale = list(session.scalars(
        select(Job.id).where(Job.status == JobStatus.running, Job.lease_expires_at < now)
    ))
    requeued = []
    for job_id in stale:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running, Job.lease_expires_at < now)
            .values(status=JobStatus.queued, lease_owner=None, lease_expires_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            requeued.append(job_id)
    session.commit()
    return requeued
