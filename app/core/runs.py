"""What a worker does to a job: claim it with a lease, renew it, write progress and
checkpoints, record the end; and the sweep that recovers jobs whose worker died.

Every write is conditional on the lease (``lease_owner == worker_id``), so a worker that
lost its job to another one can never add to its records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Update, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.models import Checkpoint, Job, JobStatus


def _update(session: Session, statement: Update) -> int:
    """Run an UPDATE; how many rows it changed."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


def claim_job(session: Session, *, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Atomically take a queued job (or one whose lease went stale); None if someone else has it."""
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.queued,
        and_(Job.status == JobStatus.running, Job.lease_expires_at < now),
    )
    result = _update(
        session,
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=now,  # of the latest attempt (attempts counts them)
            updated_at=now,
        ),
    )
    session.commit()
    if result != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def renew_lease(
    session: Session, *, job_id: str, worker_id: str, lease_seconds: float
) -> bool | None:
    """Extend our lease; returns the cancel flag, or None if the job is no longer ours."""
    now = utcnow()
    result = _update(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.running)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds)),
    )
    session.commit()
    if result != 1:
        return None
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def record_resolved_config(
    session: Session, *, job_id: str, worker_id: str, config: dict[str, Any]
) -> None:
    """Store the config as the worker resolved it (channels, num_classes from the dataset)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id)
        .values(config=config)
        .execution_options(synchronize_session=False)
    )
    session.commit()


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
    session: Session,
    *,
    job_id: str,
    step: int,
    key: str,
    size_bytes: int,
    files: dict[str, Any],
    losses: dict[str, Any] | None,
    keep: int,
    worker_id: str | None = None,
) -> Checkpoint | None:
    """Record a checkpoint that has landed, and forget the ones the trainer is about to prune.

    With ``worker_id``, only while that worker holds the job's lease (else None, nothing
    recorded): a run that lost its job to another worker must not add to its records.
    """
    if worker_id is not None:
        # Update the job row first: it is locked until commit, so a concurrent claim waits.
        held = _update(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == worker_id)
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False),
        )
        if held != 1:
            session.rollback()
            return None
    ckpt = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
    )
    if ckpt is None:
        ckpt = Checkpoint(job_id=job_id, step=step)
        session.add(ckpt)
    ckpt.path, ckpt.size_bytes, ckpt.files, ckpt.losses = key, size_bytes, files, losses
    ckpt.created_at = utcnow()
    session.flush()
    steps = list(
        session.scalars(
            select(Checkpoint.step)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step.desc())
        )
    )
    # Rows go before files: a listed checkpoint always exists on disk.
    if len(steps) > keep:
        session.execute(
            delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.in_(steps[keep:]))
        )
    session.execute(
        update(Job).where(Job.id == job_id).values(step=max(step, 0), updated_at=utcnow())
    )
    session.commit()
    return ckpt


def finish_job(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    status: JobStatus,
    error: str | None = None,
    step: int | None = None,
) -> bool:
    """Set the final status if we still hold the job; False if it was taken from us."""
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": utcnow(),
        "updated_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if step is not None:
        values["step"] = step
    result = _update(
        session, update(Job).where(Job.id == job_id, Job.lease_owner == worker_id).values(**values)
    )
    session.commit()
    return result == 1


def release_job(session: Session, *, job_id: str, worker_id: str) -> bool:
    """Hand a job back to the queue at once (graceful shutdown): queued, no lease, no loss counted.

    The caller sends its message; False if the job was no longer ours.
    """
    now = utcnow()
    result = _update(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.running)
        .values(
            status=JobStatus.queued,
            lease_owner=None,
            lease_expires_at=None,
            enqueued_at=now,
            updated_at=now,
        ),
    )
    session.commit()
    return result == 1


@dataclass
class Sweep:
    """What one sweep did; ``to_send`` are the jobs whose message the caller must (re)send."""

    to_send: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)  # their worker died; resumed elsewhere
    resent: list[str] = field(default_factory=list)  # queued so long their message looks lost
    canceled: list[str] = field(default_factory=list)  # canceled while nobody held them
    failed: list[str] = field(default_factory=list)  # their worker died max_attempts times


def _flip(session: Session, job_id: str, where: Any, values: dict[str, Any]) -> bool:
    """A conditional update of one job: when several workers sweep at once, one of them wins."""
    result = _update(session, update(Job).where(Job.id == job_id, where).values(**values))
    return result == 1


def sweep_jobs(session: Session, *, max_attempts: int, requeue_after: float) -> Sweep:
    """Find jobs no live worker will ever run, and put each where it belongs.

    - running with an expired lease (the worker died): canceled if a cancel was asked for,
      failed once its workers have died ``max_attempts`` times (a job that kills its worker,
      e.g. out of memory, is not retried forever), otherwise queued again to resume;
    - queued with a cancel request (asked while its worker was away): canceled;
    - queued with its message sent more than ``requeue_after`` seconds ago (the broker may
      have lost it, e.g. a restarted Redis without persistence): sent again. A duplicate is
      harmless: the claim is atomic and the second message finds the job taken and exits.
    """
    now = utcnow()
    done = Sweep()
    stale_lease = and_(Job.status == JobStatus.running, Job.lease_expires_at < now)
    for job in session.scalars(select(Job).where(stale_lease)):
        end = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        if job.cancel_requested:
            if _flip(
                session,
                job.id,
                stale_lease,
                {**end, "status": JobStatus.canceled, "finished_at": now},
            ):
                done.canceled.append(job.id)
        elif job.worker_losses + 1 >= max_attempts:
            error = (
                f"its worker died {job.worker_losses + 1} times (last at step {job.step}; "
                "out of memory?); not retried again. Resume it to try once more."
            )
            if _flip(
                session,
                job.id,
                stale_lease,
                {
                    **end,
                    "status": JobStatus.failed,
                    "error": error,
                    "finished_at": now,
                    "worker_losses": job.worker_losses + 1,
                },
            ):
                done.failed.append(job.id)
        elif _flip(
            session,
            job.id,
            stale_lease,
            {
                **end,
                "status": JobStatus.queued,
                "enqueued_at": now,
                "worker_losses": job.worker_losses + 1,
            },
        ):
            done.requeued.append(job.id)
    queued = Job.status == JobStatus.queued
    for job_id in session.scalars(select(Job.id).where(queued, Job.cancel_requested.is_(True))):
        if _flip(
            session,
            job_id,
            and_(queued, Job.cancel_requested.is_(True)),
            {"status": JobStatus.canceled, "finished_at": now, "updated_at": now},
        ):
            done.canceled.append(job_id)
    lost = and_(
        queued,
        or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - timedelta(seconds=requeue_after)),
    )
    for job_id in session.scalars(select(Job.id).where(lost)):
        if _flip(session, job_id, lost, {"enqueued_at": now}):
            done.resent.append(job_id)
    session.commit()
    done.to_send = done.requeued + done.resent
    return done


def mark_unsent(session: Session, *, job_ids: list[str]) -> None:
    """Messages that could not be sent (broker down): the next sweep sends them again."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status == JobStatus.queued)
            .values(enqueued_at=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()
