"""What a worker does to a job: claim it with a lease, renew it, write progress and
checkpoints, record the end or hand it back (the recovery of jobs whose worker died is in
app.core.jobs.recovery; scores and pruning in app.core.serving.scores).

Every write is conditional on the lease (``lease_owner == worker_id``), so a worker that
lost its job to another one can never add to its records.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Update, and_, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.integrations import webhooks
from app.core.models import Checkpoint, Job, JobStatus, Worker
from app.core.serving import history

# What a running job is doing (``Job.phase``; shown as ``progress.phase`` while it runs):
# claimed and loading its data; building or loading its dataset's scorer (the first job on
# new data trains a feature extractor, tens of seconds at step 0); training; scoring a
# checkpoint (training waits); writing its checkpoint and going back to the queue (SIGTERM).
PHASES = ("starting", "preparing_scorer", "training", "scoring", "handing_back")


def update_rows(session: Session, statement: Update) -> int:
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
    result = update_rows(
        session,
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=now,  # of the latest attempt (attempts counts them)
            phase="starting",
            updated_at=now,
            version=Job.version + 1,
        ),
    )
    if result == 1:
        webhooks.announce(session, job_id, "started")  # in the claim's transaction
    session.commit()
    if result != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def renew_lease(
    session: Session, *, job_id: str, worker_id: str, lease_seconds: float
) -> bool | None:
    """Extend our lease; returns the cancel flag, or None if the job is no longer ours."""
    now = utcnow()
    result = update_rows(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.running)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds)),
    )
    session.commit()
    if result != 1:
        return None
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def record_phase(session: Session, *, job_id: str, worker_id: str, phase: str) -> None:
    """Say what the job is doing now (one of PHASES), while we hold it; its watchers see it."""
    assert phase in PHASES, phase
    update_rows(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.phase.is_distinct_from(phase))
        .values(phase=phase, updated_at=utcnow(), version=Job.version + 1),
    )
    session.commit()


def record_resolved_config(
    session: Session, *, job_id: str, worker_id: str, config: dict[str, Any]
) -> None:
    """Store the config as the worker resolved it (channels, num_classes from the dataset)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id)
        .values(config=config, version=Job.version + 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def record_progress(
    session: Session, *, job_id: str, worker_id: str, progress: Any, history_points: int = 500
) -> None:
    """Write the loop's latest progress onto the job row and into its loss history (only while
    we hold the job)."""
    values: dict[str, Any] = {
        "step": progress.step,
        "total_steps": progress.total_steps,
        "epoch": progress.epoch,
        "losses": progress.losses,
        "images_per_sec": progress.images_per_sec,
        "eta_seconds": progress.eta_seconds,
        "augment_p": progress.augment_p,
        "phase": "training",  # the loop reports only while it trains
        "updated_at": utcnow(),
        "version": Job.version + 1,
    }
    held = update_rows(
        session, update(Job).where(Job.id == job_id, Job.lease_owner == worker_id).values(**values)
    )
    if held == 1:
        history.append(session, job_id=job_id, progress=progress, points=history_points)
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
    worker_id: str | None = None,
    scoring: bool = False,
    write_seconds: float | None = None,
) -> Checkpoint | None:
    """Record a checkpoint that has landed (pruning is app.core.serving.scores.prune_rows' job).

    With ``scoring``, its scores follow (``score_status`` "pending"); without, it is final now
    and announced to the job's watchers. With ``worker_id``, only while that worker holds the
    job's lease (else None, nothing recorded): a run that lost its job to another worker must
    not add to its records.
    """
    if worker_id is not None:
        # Update the job row first: it is locked until commit, so a concurrent claim waits.
        held = update_rows(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == worker_id)
            .values(updated_at=utcnow()),
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
    ckpt.pruned_at = None
    ckpt.write_seconds = write_seconds
    ckpt.score_status, ckpt.scores, ckpt.best_fd, ckpt.preferred = (
        "pending" if scoring else "off",
        None,
        None,
        None,
    )
    ckpt.event_version = None if scoring else bump_version(session, job_id)
    session.execute(update(Job).where(Job.id == job_id).values(step=max(step, 0)))
    if not scoring:  # final now; with scoring, announced with its scores
        webhooks.announce(session, job_id, "checkpoint", ckpt)
    session.commit()
    return ckpt


def record_worker_load(
    session: Session, *, worker: str, job_id: str | None, images_per_sec: float | None
) -> None:
    """What a worker process is training and how fast, on its heartbeat row (for /metrics)."""
    session.execute(
        update(Worker)
        .where(Worker.id == worker)
        .values(job_id=job_id, images_per_sec=images_per_sec)
    )
    session.commit()


def record_rollback(
    session: Session, *, job_id: str, worker_id: str, rollback: dict[str, Any]
) -> None:
    """Add a rolled-back divergence to the job's record (its watchers see it)."""
    job = session.get(Job, job_id)
    if job is None or job.lease_owner != worker_id:
        return
    job.rollbacks = [*(job.rollbacks or []), rollback]
    session.flush()
    bump_version(session, job_id)
    session.commit()


def bump_version(session: Session, job_id: str) -> int:
    """+1 on the job's version (something its watchers should see); the new version."""
    version = session.scalar(
        update(Job)
        .where(Job.id == job_id)
        .values(version=Job.version + 1, updated_at=utcnow())
        .returning(Job.version)
    )
    return int(version or 0)


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
        "phase": None,
        "version": Job.version + 1,
    }
    if step is not None:
        values["step"] = step
    result = update_rows(
        session, update(Job).where(Job.id == job_id, Job.lease_owner == worker_id).values(**values)
    )
    if result == 1:
        webhooks.announce(session, job_id, str(status))
    session.commit()
    return result == 1


def release_job(session: Session, *, job_id: str, worker_id: str) -> bool:
    """Hand a job back to the queue at once (graceful shutdown): queued, no lease, no loss counted.

    The caller sends its message; False if the job was no longer ours.
    """
    now = utcnow()
    result = update_rows(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.running)
        .values(
            status=JobStatus.queued,
            lease_owner=None,
            lease_expires_at=None,
            phase=None,
            enqueued_at=now,
            updated_at=now,
            version=Job.version + 1,
        ),
    )
    session.commit()
    return result == 1


def requeue_after_loss(
    session: Session, *, job_id: str, worker_id: str, reason: str, max_attempts: int
) -> str:
    """Put back a job whose run was lost while its worker lives (a rank of its process group
    died or stalled), as the sweep puts back a dead worker's (app.core.jobs.recovery): to the
    queue to resume from its last checkpoint, with ``reason`` on the job; ``failed`` once that
    has happened ``max_attempts`` times; ``canceled`` if a cancel was asked for. Returns which,
    or "lost" when the job is no longer ours (the caller sends the message of a "queued")."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.lease_owner != worker_id:
        return "lost"
    now, losses = utcnow(), job.worker_losses + 1
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "phase": None,
        "worker_losses": losses,
        "updated_at": now,
        "version": Job.version + 1,
    }
    if job.cancel_requested:
        outcome, values = JobStatus.canceled, {**values, "finished_at": now}
    elif losses >= max_attempts:
        outcome = JobStatus.failed
        values["finished_at"] = now
        values["error"] = (
            f"{reason} (its run was lost {losses} times, last at step {job.step}); not "
            "retried again. Resume it to try once more."
        )
    else:
        outcome = JobStatus.queued
        values["enqueued_at"] = now
        values["error"] = (
            f"attempt {job.attempts}: {reason}; back in the queue to resume from its last "
            "checkpoint"
        )
    held = update_rows(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id)
        .values(status=outcome, **values),
    )
    if held == 1 and outcome != JobStatus.queued:
        webhooks.announce(session, job_id, str(outcome))
    session.commit()
    return str(outcome) if held == 1 else "lost"
