"""The sweep: jobs that no live worker would ever run, found and put where they belong."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.integrations import webhooks
from app.core.jobs.queue import job_devices
from app.core.jobs.runs import update_rows
from app.core.models import Job, JobStatus

# A job's row is committed (with enqueued_at) a moment before its message is sent; such jobs
# are left out of the count of jobs whose message the broker should hold.
_SENDING_SECONDS = 2.0


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
    result = update_rows(session, update(Job).where(Job.id == job_id, where).values(**values))
    return result == 1


def sweep_jobs(
    session: Session,
    *,
    max_attempts: int,
    requeue_after: float,
    waiting: Callable[[], int | None] = lambda: None,
) -> Sweep:
    """Find jobs no live worker will ever run, and put each where it belongs.

    - running with an expired lease (the worker died): canceled if a cancel was asked for,
      failed once its workers have died ``max_attempts`` times (a job that kills its worker,
      e.g. out of memory, is not retried forever), otherwise queued again to resume;
    - queued with a cancel request (asked while its worker was away): canceled;
    - queued with its message sent more than ``requeue_after`` seconds ago: the broker may
      have lost it (e.g. a restarted Redis without persistence), so it is sent again -- but
      only as many of them, oldest first, as the broker is short of messages: ``waiting()``
      says how many training messages the broker holds (None: it cannot say, and every such
      job is sent again). Queued jobs of a busy fleet, each waiting its turn behind others
      with its message in the broker, are not re-sent each sweep. A duplicate is harmless:
      the claim (``runs.claim_job``) is one conditional UPDATE, so the second message finds
      the job taken (or finished) and exits.
    """
    now = utcnow()
    done = Sweep()
    # Counted before anything below changes: queued jobs whose message went out more than a
    # moment ago, against the messages the broker holds (a message sent meanwhile only makes
    # the count short of a loss this sweep, which the next sweep finds).
    queued = Job.status == JobStatus.queued
    messages = waiting()
    short = None
    if messages is not None:
        sent = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(queued, Job.enqueued_at < now - timedelta(seconds=_SENDING_SECONDS))
        )
        short = max(0, int(sent or 0) - messages)
    stale_lease = and_(Job.status == JobStatus.running, Job.lease_expires_at < now)
    for job in list(session.scalars(select(Job).where(stale_lease))):
        end = {
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "version": Job.version + 1,
        }
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
    for job_id in list(
        session.scalars(select(Job.id).where(queued, Job.cancel_requested.is_(True)))
    ):
        if _flip(
            session,
            job_id,
            and_(queued, Job.cancel_requested.is_(True)),
            {
                "status": JobStatus.canceled,
                "finished_at": now,
                "updated_at": now,
                "version": Job.version + 1,
            },
        ):
            done.canceled.append(job_id)
    unsent = and_(queued, Job.enqueued_at.is_(None))  # its send failed (mark_unsent)
    for job_id in list(session.scalars(select(Job.id).where(unsent))):
        if _flip(session, job_id, unsent, {"enqueued_at": now}):
            done.resent.append(job_id)
    overdue = and_(queued, Job.enqueued_at < now - timedelta(seconds=requeue_after))
    if short != 0:  # 0: the broker holds a message for every queued job; none looks lost
        oldest = select(Job.id).where(overdue).order_by(Job.enqueued_at, Job.id)
        for job_id in list(session.scalars(oldest if short is None else oldest.limit(short))):
            if _flip(session, job_id, overdue, {"enqueued_at": now}):
                done.resent.append(job_id)
    for job_id in done.canceled:  # announced in the transaction of the change
        webhooks.announce(session, job_id, "canceled")
    for job_id in done.failed:
        webhooks.announce(session, job_id, "failed")
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


def devices_of(session: Session, job_ids: list[str]) -> dict[str, int]:
    """The devices each job asks for (its queue: app.core.jobs.queue.queue_for)."""
    found: dict[str, int] = {}
    if job_ids:
        for job_id, config in session.execute(
            select(Job.id, Job.config).where(Job.id.in_(job_ids))
        ):
            found[job_id] = job_devices(config)
    return {job_id: found.get(job_id, 1) for job_id in job_ids}
