"""What a worker does to a folder translation (as app.core.jobs.runs is for jobs): claim it
with a lease, renew it with its progress, record the end or hand it back; and the sweep that
finds one no live worker will run. Every write is conditional on the lease
(``lease_owner == worker_id``): a worker that lost it can add nothing. The records and the
client's transitions are in app.core.serving.folder_translations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.integrations import webhooks
from app.core.jobs.runs import update_rows
from app.core.models import JobStatus, Translation

MAX_REPORTED = 1000  # failures listed on the resource (all of them are in the zip's report)


def claim(
    session: Session, *, translation_id: str, worker_id: str, lease_seconds: float
) -> Translation | None:
    """Atomically take a queued translation (or one whose lease went stale); None otherwise."""
    now = utcnow()
    claimable = or_(
        Translation.status == JobStatus.queued,
        and_(Translation.status == JobStatus.running, Translation.lease_expires_at < now),
    )
    taken = update_rows(
        session,
        update(Translation)
        .where(
            Translation.id == translation_id,
            claimable,
            Translation.cancel_requested.is_(False),
        )
        .values(
            status=JobStatus.running,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Translation.attempts + 1,
            started_at=now,
            done=0,  # a run starts over
            failed=0,
            updated_at=now,
        ),
    )
    session.commit()
    if taken != 1:
        return None
    return session.get(Translation, translation_id, populate_existing=True)


def _ours(translation_id: str, worker_id: str) -> Any:
    return and_(
        Translation.id == translation_id,
        Translation.lease_owner == worker_id,
        Translation.status == JobStatus.running,
    )


def renew(
    session: Session,
    *,
    translation_id: str,
    worker_id: str,
    lease_seconds: float,
    done: int | None = None,
    failed: int | None = None,
) -> bool | None:
    """Extend our lease (and write progress, if given); the cancel flag, or None if the
    translation is no longer ours."""
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
    if done is not None:
        values.update(done=done, failed=failed or 0, updated_at=now)
    held = update_rows(
        session, update(Translation).where(_ours(translation_id, worker_id)).values(**values)
    )
    session.commit()
    if held != 1:
        return None
    return bool(
        session.scalar(select(Translation.cancel_requested).where(Translation.id == translation_id))
    )


def finish(
    session: Session,
    *,
    translation_id: str,
    worker_id: str,
    status: JobStatus,
    error: str | None = None,
    report: dict[str, Any] | None = None,
    result_bytes: int | None = None,
) -> bool:
    """Record the end if we still hold the translation; False if it was taken from us."""
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": utcnow(),
        "updated_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
        "result_bytes": result_bytes,
    }
    if report is not None:
        shown = dict(report)
        shown["failed"] = list(report.get("failed", []))[:MAX_REPORTED]
        values.update(
            report=shown,
            done=int(report.get("translated", 0)) + len(report.get("failed", [])),
            failed=len(report.get("failed", [])),
        )
    held = update_rows(
        session, update(Translation).where(_ours(translation_id, worker_id)).values(**values)
    )
    if held == 1:
        webhooks.announce_translation(session, translation_id)  # in the end's transaction
    session.commit()
    return held == 1


def release(session: Session, *, translation_id: str, worker_id: str) -> bool:
    """Hand a translation back to the queue (a worker shutting down); the caller sends it."""
    now = utcnow()
    held = update_rows(
        session,
        update(Translation)
        .where(_ours(translation_id, worker_id))
        .values(
            status=JobStatus.queued,
            lease_owner=None,
            lease_expires_at=None,
            enqueued_at=now,
            updated_at=now,
        ),
    )
    session.commit()
    return held == 1


def mark_unsent(session: Session, *, translation_id: str) -> None:
    """Its message could not be sent: the next sweep sends it."""
    update_rows(
        session,
        update(Translation)
        .where(Translation.id == translation_id, Translation.status == JobStatus.queued)
        .values(enqueued_at=None),
    )
    session.commit()


def sweep(
    session: Session,
    *,
    max_attempts: int,
    requeue_after: float,
    waiting: Callable[[], int | None] = lambda: None,
) -> dict[str, list[str]]:
    """Translations no live worker will run, put where they belong (as jobs are swept):
    running with a stale lease -> canceled (a cancel was asked), failed (its workers died
    ``max_attempts`` times) or queued again; queued with no message sent (the send failed)
    -> sent; queued with its message sent more than ``requeue_after`` s ago -> sent again,
    but only while the broker holds no message at all (``waiting()`` 0, or None: it cannot
    say), so one waiting its turn behind a long training job is not re-sent every minute.
    A duplicate finds it claimed and does nothing.
    Returns {"to_send": [...], "requeued": [...], "failed": [...], "canceled": [...]}."""
    now = utcnow()
    done: dict[str, list[str]] = {"to_send": [], "requeued": [], "failed": [], "canceled": []}
    stale = and_(Translation.status == JobStatus.running, Translation.lease_expires_at < now)
    end: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    for row in list(session.scalars(select(Translation).where(stale))):
        where = and_(Translation.id == row.id, stale)
        values: dict[str, Any]
        if row.cancel_requested:
            values = {**end, "status": JobStatus.canceled, "finished_at": now}
            kind = "canceled"
        elif row.worker_losses + 1 >= max_attempts:
            values = {
                **end,
                "status": JobStatus.failed,
                "finished_at": now,
                "worker_losses": row.worker_losses + 1,
                "error": f"its worker died {row.worker_losses + 1} times (out of memory?); "
                "not retried again",
            }
            kind = "failed"
        else:
            values = {
                **end,
                "status": JobStatus.queued,
                "enqueued_at": now,
                "worker_losses": row.worker_losses + 1,
            }
            kind = "requeued"
        if update_rows(session, update(Translation).where(where).values(**values)) == 1:
            done[kind].append(row.id)
            webhooks.announce_translation(session, row.id)  # an end (not a requeue): announced
    queued = Translation.status == JobStatus.queued
    lost: Any = Translation.enqueued_at.is_(None)
    if not waiting():  # 0 or None: an old message may have been lost with the broker
        lost = or_(lost, Translation.enqueued_at < now - timedelta(seconds=requeue_after))
    lost = and_(queued, lost)
    for row_id in list(session.scalars(select(Translation.id).where(lost))):
        if (
            update_rows(
                session,
                update(Translation).where(Translation.id == row_id, lost).values(enqueued_at=now),
            )
            == 1
        ):
            done["to_send"].append(row_id)
    session.commit()
    done["to_send"] = done["requeued"] + done["to_send"]
    return done
