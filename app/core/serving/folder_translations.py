"""Folder translations: a zip of images translated by one checkpoint, as a long-running resource.

queued -> running -> succeeded | failed | canceled;  queued -> canceled;
running with a stale lease -> queued again (its worker died), or failed after
``max_attempts`` such losses.

Like a job: the API records the row and sends a message on the training queue
(app.core.serving.folder_submit: the ref, the limits, the storage quota, Idempotency-Key)
on ``ganforge.translate_folder``, the same broker and queue, so embedded serve's folder broker
and the Redis fleet both run it; a worker claims it with a lease it renews, writes progress
about every ``progress_interval`` seconds, stops between batches when a cancel is asked and
records the end; the sweep finds one whose worker died (those writes are in
app.core.serving.folder_runs, each conditional on the lease). The checkpoint ref is resolved at submit, and pruning keeps that checkpoint
while the translation is unfinished (``in_use``), so ``latest`` moving on changes nothing.

Files: ``translations/<id>/inputs`` (the unpacked images and a manifest, published at
submit) and ``translations/<id>/result/result.zip`` (published at the end); removed with
the record. Their bytes count toward the owner's storage quota (app.core.jobs.limits).
Deleting a job cancels its unfinished translations (app.core.jobs.records.delete_job).
"""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.core.artifacts.store import LocalStore
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.integrations import webhooks
from app.core.jobs.records import Page
from app.core.models import FINISHED, JobStatus, Translation

UNFINISHED = (JobStatus.queued, JobStatus.running)


def inputs_key(translation_id: str) -> str:
    return f"translations/{translation_id}/inputs"


def result_key(translation_id: str) -> str:
    return f"translations/{translation_id}/result"


RESULT_FILE = "result.zip"


def get(session: Session, *, translation_id: str, owner_id: str | None = None) -> Translation:
    """The translation, or NotFound (also for another owner's: existence is not revealed)."""
    row = session.get(Translation, translation_id)
    if row is None or (owner_id is not None and row.owner_id != owner_id):
        raise NotFound(f"translation {translation_id} not found")
    return row


def _encode_cursor(row: Translation) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = raw.split("|", 1)
        if "\x00" in row_id:
            raise ValueError("NUL in cursor")
        return datetime.fromisoformat(stamp), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this API returned", field="cursor") from exc


def list_translations(
    session: Session,
    *,
    owner_id: str | None = None,
    status: JobStatus | None = None,
    job_id: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page:
    """Translations newest first, keyset-paginated by (created_at, id), as jobs are."""
    query = (
        select(Translation)
        .order_by(Translation.created_at.desc(), Translation.id.desc())
        .limit(limit + 1)
    )
    if owner_id is not None:
        query = query.where(Translation.owner_id == owner_id)
    if status is not None:
        query = query.where(Translation.status == status)
    if job_id is not None:
        query = query.where(Translation.job_id == job_id)
    if cursor:
        stamp, row_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                Translation.created_at < stamp,
                and_(Translation.created_at == stamp, Translation.id < row_id),
            )
        )
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(rows[-1]) if more and rows else None)


def request_cancel(session: Session, *, translation_id: str, owner_id: str | None) -> Translation:
    """Cancel a queued translation at once; ask a running one to stop after its batch."""
    row = get(session, translation_id=translation_id, owner_id=owner_id)
    if row.status in FINISHED:
        raise Conflict(f"translation {translation_id} is already {row.status}")
    if row.status == JobStatus.queued:
        row.status, row.finished_at = JobStatus.canceled, utcnow()
        session.flush()
        webhooks.announce_translation(session, row.id)  # committed with the cancel
    row.cancel_requested = True
    session.commit()
    return row


def delete(
    session: Session, store: LocalStore, *, translation_id: str, owner_id: str | None
) -> None:
    """Delete a translation that is not running, with its files: the record first."""
    row = get(session, translation_id=translation_id, owner_id=owner_id)
    if row.status == JobStatus.running:
        raise Conflict(f"translation {translation_id} is running; cancel it first")
    session.delete(row)  # a queued one's message will find nothing to run
    session.commit()
    store.discard(f"translations/{translation_id}")


def in_use(session: Session, *, job_id: str) -> set[str]:
    """The checkpoints of a job that unfinished translations will read (kept from pruning)."""
    return set(
        session.scalars(
            select(Translation.checkpoint_id).where(
                Translation.job_id == job_id, Translation.status.in_(UNFINISHED)
            )
        )
    )
