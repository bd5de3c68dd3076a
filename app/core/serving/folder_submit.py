"""Submitting a folder translation: the checkpoint a ref names, the owner's limits (unfinished
translations and the storage quota), the Idempotency-Key, and the record with its message.

A submit is checked twice: before its body is read (``admit``: the ref, the limits, a quota
already full), and once the zip is unpacked (``create``: the quota with the new inputs
added). A repeated Idempotency-Key with the same request -- the same job, ref, direction,
ema and zip bytes (by SHA-256) -- returns the first translation and sends no message; with a
different request it is a 409 naming ``Idempotency-Key``. Keys are per owner, as jobs' are.
The records and the client's other transitions are in app.core.serving.folder_translations.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.access.auth import Principal
from app.core.artifacts import checkpoints
from app.core.artifacts.store import LocalStore
from app.core.datasets.upload_receiver import ReceivedUpload
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput
from app.core.jobs import limits
from app.core.jobs.queue import JobQueue
from app.core.models import Checkpoint, JobStatus, Translation, new_id
from app.core.serving.folder_inputs import unpack_inputs
from app.core.serving.folder_translations import UNFINISHED, inputs_key
from app.core.serving.sampling import EmaChoice, use_ema
from app.core.serving.translating import NOT_A_TRANSLATOR, TRANSLATION_KINDS, directions_of
from app.core.settings import Settings


@dataclass(frozen=True)
class Asked:
    """What the client asked for, as the URL says it (the ref unresolved): with the zip's
    bytes, what an Idempotency-Key stands for."""

    job_id: str
    ref: str
    direction: str
    ema: EmaChoice

    def digest(self, archive: Path) -> str:
        """SHA-256 over these and the zip's bytes."""
        zip_hash = hashlib.sha256()
        with open(archive, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                zip_hash.update(chunk)
        asked = {
            "job_id": self.job_id,
            "ref": self.ref,
            "direction": self.direction,
            "ema": EmaChoice(self.ema).value,
            "zip_sha256": zip_hash.hexdigest(),
        }
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


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
        raise limits.TooManyJobs(
            f"{active} folder translations are queued or running; the limit is "
            f"{settings.max_jobs_per_owner} per owner (cancel one or wait)",
            retry_after=30,
        )


def find_idempotent(session: Session, *, owner_id: str, key: str) -> Translation | None:
    return session.scalar(
        select(Translation).where(
            Translation.owner_id == owner_id, Translation.idempotency_key == key
        )
    )


def admit(
    session: Session,
    settings: Settings,
    *,
    asked: Asked,
    principal: Principal,
    idempotency_key: str | None,
) -> Target | None:
    """Before the body is read: the checkpoint the ref names (404/409/422), the owner's
    unfinished translations (429) and a storage quota already full (409). None for a key
    already used: only the body can say whether it is the same request, and a replay is held
    to none of these."""
    if idempotency_key is not None and find_idempotent(
        session, owner_id=principal.owner_id, key=idempotency_key
    ):
        return None
    return _checked_target(session, settings, asked=asked, principal=principal)


def _checked_target(
    session: Session, settings: Settings, *, asked: Asked, principal: Principal
) -> Target:
    target = resolve_target(
        session,
        job_id=asked.job_id,
        ref=asked.ref,
        direction=asked.direction,
        ema=asked.ema,
        owner_id=principal.scope,
    )
    check_owner_limit(session, settings, owner_id=principal.owner_id)
    limits.check_storage(session, settings, owner_id=principal.owner_id)
    return target


def _replay(existing: Translation, digest: str) -> Translation:
    if existing.request_hash != digest:
        raise Conflict(
            "Idempotency-Key was already used with a different request (job, checkpoint ref, "
            "direction, ema or zip)",
            field="Idempotency-Key",
        )
    return existing


def create(
    session: Session,
    settings: Settings,
    store: LocalStore,
    queue: JobQueue,
    *,
    asked: Asked,
    target: Target | None,
    upload: ReceivedUpload,
    principal: Principal,
    idempotency_key: str | None = None,
) -> Translation:
    """Check and unpack the received zip into the store, record the translation and send its
    message; the first translation again for a repeated Idempotency-Key. On a refusal, or a
    broker that cannot be reached, nothing stays behind."""
    owner = principal.owner_id
    digest = asked.digest(upload.path)
    if idempotency_key is not None:
        existing = find_idempotent(session, owner_id=owner, key=idempotency_key)
        if existing is not None:
            return _replay(existing, digest)
    if target is None:  # the key's first translation was deleted while this body arrived
        target = _checked_target(session, settings, asked=asked, principal=principal)
    translation_id = new_id("tr")
    inputs = unpack_inputs(upload.path, settings, upload.scratch / "inputs")
    check_owner_limit(session, settings, owner_id=owner)
    key = inputs_key(translation_id)
    final = store.cache_path(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(upload.scratch / "inputs", final)
    try:
        size = store.usage_bytes(key)
        limits.check_storage(session, settings, owner_id=owner, adding=size)
        store.publish(key)
        ckpt = session.get(Checkpoint, target.checkpoint_id)
        if ckpt is None or ckpt.pruned_at is not None:
            raise Conflict(
                f"checkpoint {target.checkpoint_id} was pruned or deleted meanwhile; try again"
            )
        row = Translation(
            id=translation_id,
            owner_id=owner,
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
            idempotency_key=idempotency_key,
            request_hash=digest,
            input_bytes=size,
        )
        session.add(row)
        session.commit()
    except BaseException as exc:
        session.rollback()
        store.discard(f"translations/{translation_id}")
        if isinstance(exc, IntegrityError) and idempotency_key is not None:
            # a concurrent submit with the same key recorded its translation first
            existing = find_idempotent(session, owner_id=owner, key=idempotency_key)
            if existing is not None:
                return _replay(existing, digest)
        raise
    try:
        queue.send_translation(translation_id)
    except Exception:
        session.delete(row)
        session.commit()
        store.discard(f"translations/{translation_id}")
        raise
    return row
