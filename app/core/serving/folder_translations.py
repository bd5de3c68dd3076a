"""Folder translations: a zip of images translated by one checkpoint, as a long-running resource.

queued -> running -> succeeded | failed | canceled;  queued -> canceled;
running with a stale lease -> queued again (its worker died), or failed after
``max_attempts`` such losses.

Like a job: the API records the row and sends a message on the training queue
(``ganforge.translate_folder``, the same broker and queue, so embedded serve's folder broker
and the Redis fleet both run it); a worker claims it with a lease it renews, writes progress
about every ``progress_interval`` seconds, stops between batches when a cancel is asked and
records the end; the sweep finds one whose worker died (those writes are in
app.core.serving.folder_runs, each conditional on the lease). The checkpoint ref is resolved at submit, and pruning keeps that checkpoint
while the translation is unfinished (``in_use``), so ``latest`` moving on changes nothing.

Files: ``translations/<id>/inputs`` (the unpacked images and a manifest, published at
submit) and ``translations/<id>/result/result.zip`` (published at the end); removed with
the record.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.core.access.auth import Principal
from app.core.artifacts import checkpoints
from app.core.artifacts.store import LocalStore
from app.core.datasets.upload_receiver import ReceivedUpload
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.integrations import webhooks
from app.core.jobs.limits import TooManyJobs
from app.core.jobs.queue import JobQueue
from app.core.jobs.records import Page
from app.core.models import FINISHED, Checkpoint, JobStatus, Translation, new_id
from app.core.serving.folder_inputs import unpack_inputs
from app.core.serving.sampling import EmaChoice, use_ema
from app.core.serving.translating import NOT_A_TRANSLATOR, TRANSLATION_KINDS, directions_of
from app.core.settings import Settings

UNFINISHED = (JobStatus.queued, JobStatus.running)


def inputs_key(translation_id: str) -> str:
    return f"translations/{translation_id}/inputs"


def result_key(translation_id: str) -> str:
    return f"translations/{translation_id}/result"


RESULT_FILE = "result.zip"


@dataclass(frozen=True)
class Target:
    """What a submit resolved before reading the body: the fixed checkpoint and weights."""

    job_id: str
    checkpoint_id: str
    step: int
    direction: str
    ema: bool


def resolve_target(
    session: Session, *, job_id: str, ref: str, direction: str, ema: EmaChoice, owner_id: str | None
) -> Target:
    """The checkpoint a ref names now (404s as for translate), checked to translate
    ``direction`` (409 for a noise generator, 422 on ``direction``)."""
    row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ref, owner_id=owner_id)
    kind = str((row.job.config or {}).get("kind") or "noise")
    if kind not in TRANSLATION_KINDS:
        raise Conflict(
            f"checkpoint {row.id} of job {job_id} holds a noise-to-image generator: "
            f"{NOT_A_TRANSLATOR}"
        )
    if direction not in directions_of(kind):
        raise InvalidInput(
            f"direction: a {kind} model translates {' or '.join(directions_of(kind))}, "
            f"not {direction!r}",
            field="direction",
        )
    return Target(job_id, row.id, row.step, direction, use_ema(row, ema))


def check_owner_limit(session: Session, settings: Settings, *, owner_id: str) -> None:
    """At most ``max_jobs_per_owner`` unfinished folder translations per owner (429)."""
    active = session.scalar(
        select(func.count())
        .select_from(Translation)
        .where(Translation.owner_id == owner_id, Translation.status.in_(UNFINISHED))
    )
    if (active or 0) >= settings.max_jobs_per_owner:
        raise TooManyJobs(
            f"{active} folder translations are queued or running; the limit is "
            f"{settings.max_jobs_per_owner} per owner (cancel one or wait)",
            retry_after=30,
        )


def create(
    session: Session,
    settings: Settings,
    store: LocalStore,
    queue: JobQueue,
    *,
    target: Target,
    upload: ReceivedUpload,
    principal: Principal,
) -> Translation:
    """Check and unpack the received zip into the store, record the translation and send its
    message. On a refusal, or a broker that cannot be reached, nothing stays behind."""
    translation_id = new_id("tr")
    inputs = unpack_inputs(upload.path, settings, upload.scratch / "inputs")
    check_owner_limit(session, settings, owner_id=principal.owner_id)
    key = inputs_key(translation_id)
    final = store.cache_path(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(upload.scratch / "inputs", final)
    try:
        store.publish(key)
        ckpt = session.get(Checkpoint, target.checkpoint_id)
        if ckpt is None or ckpt.pruned_at is not None:
            raise Conflict(
                f"checkpoint {target.checkpoint_id} was pruned or deleted meanwhile; try again"
            )
        row = Translation(
            id=translation_id,
            owner_id=principal.owner_id,
            job_id=target.job_id,
            checkpoint_id=target.checkpoint_id,
            checkpoint_step=target.step,
            direction=target.direction,
            ema=target.ema,
            filename=upload.filename,
            status=JobStatus.queued,
            total=len(inputs.images),
            done=0,
            failed=0,
            report={"skipped": inputs.skipped} if inputs.skipped else None,
            cancel_requested=False,
            attempts=0,
            worker_losses=0,
            enqueued_at=utcnow(),
        )
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        store.discard(f"translations/{translation_id}")
        raise
    try:
        queue.send_translation(translation_id)
    except Exception:
        session.delete(row)
        session.commit()
        store.discard(f"translations/{translation_id}")
        raise
    return row


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
