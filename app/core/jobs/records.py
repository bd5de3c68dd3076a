"""Job records and the transitions a client asks for: submit, list, read, cancel, resume, delete.

queued -> running -> succeeded | failed | canceled;  queued -> canceled;
failed | canceled -> queued (resume);  succeeded -> queued (resume to more steps: train
longer);  running with a stale lease -> queued (recovery).
What a worker does to a job (claim, lease, progress, checkpoints, the end) is in
``app.core.jobs.runs``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.access.auth import Principal
from app.core.artifacts.store import ArtifactStore
from app.core.datasets import records as datasets
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.integrations import webhooks
from app.core.jobs import limits
from app.core.jobs.queue import JobQueue, job_devices
from app.core.models import FINISHED, Dataset, Job, JobStatus, Translation
from app.core.settings import Settings
from gan_core.jobconfig import AnyConfig, parse_config


def _request_hash(name: str, config: AnyConfig, webhook: Any = None) -> str:
    request = {"name": name, "config": config.model_dump(mode="json")}
    if webhook is not None:
        request["webhook"] = webhook
    body = json.dumps(request, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def find_idempotent(session: Session, *, owner_id: str | None, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def submit_job(
    session: Session,
    settings: Settings,
    queue: JobQueue,
    *,
    principal: Principal,
    name: str,
    config: AnyConfig,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Job:
    """Check, record and enqueue a new job; a repeated Idempotency-Key returns the first job.

    The row is committed before the message is sent (the worker must find it); if the
    broker cannot be reached the row is deleted again, so the client may retry with the
    same key and nothing half-made stays behind.
    """
    config, upload = datasets.check_training_dataset(
        session, settings, config, owner_id=principal.scope
    )
    owner = principal.owner_id
    webhook = None
    if webhook_url is not None:  # refused now if it points inside; checked again at delivery
        webhooks.resolve_target(webhook_url, allow_private=settings.webhook_allow_private)
        webhook = (webhook_url, webhooks.check_events(webhook_events))
    elif webhook_events is not None:
        raise InvalidInput("webhook_events needs a webhook_url", field="webhook_events")
    if idempotency_key is None or not find_idempotent(session, owner_id=owner, key=idempotency_key):
        limits.check_new_job(session, settings, owner_id=owner, config=config)
    job, created = create_job(
        session,
        name=name,
        config=config,
        idempotency_key=idempotency_key,
        dataset=upload,
        owner_id=owner,
        webhook=webhook,
    )
    session.commit()
    if created:
        try:
            queue.enqueue(job.id, job_devices(job.config))
        except Exception:
            session.delete(job)
            session.commit()
            raise
    return job


def create_job(
    session: Session,
    *,
    name: str,
    config: AnyConfig,
    owner_id: str | None = None,
    idempotency_key: str | None = None,
    dataset: Dataset | None = None,
    webhook: tuple[str, list[str]] | None = None,
) -> tuple[Job, bool]:
    """Store a queued job; returns (job, created). A repeated idempotency key returns the first job."""
    digest = _request_hash(name, config, webhook)
    dataset_id = dataset.id if dataset else None
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
        dataset_id=dataset_id,
        idempotency_key=idempotency_key,
        request_hash=digest,
        total_steps=config.steps,
        enqueued_at=utcnow(),
        webhook_url=webhook[0] if webhook else None,
        webhook_events=webhook[1] if webhook else None,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        # Two conflicts are possible: a concurrent retry with the same key won the race
        # (return its job), or the uploaded dataset was deleted meanwhile (a 409, not a 500).
        if idempotency_key is not None and find_idempotent(
            session, owner_id=owner_id, key=idempotency_key
        ):
            return create_job(
                session,
                name=name,
                config=config,
                owner_id=owner_id,
                idempotency_key=idempotency_key,
                dataset=dataset,
                webhook=webhook,
            )
        if dataset_id is not None and session.get(Dataset, dataset_id) is None:
            raise Conflict(
                f"dataset {dataset_id} was deleted while the job was being created",
                field="config.dataset",
            ) from exc
        raise
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
        if "\x00" in job_id:
            raise ValueError("NUL in cursor")
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
    canceled_now = job.status == JobStatus.queued
    if canceled_now:
        job.status, job.finished_at = JobStatus.canceled, utcnow()
    job.cancel_requested = True
    job.version = Job.version + 1  # atomic, beside the worker's writes
    session.flush()
    if canceled_now:
        webhooks.announce(session, job_id, "canceled")  # the caller's commit sends both
    return job


def submit_resume(
    session: Session,
    settings: Settings,
    queue: JobQueue,
    *,
    job_id: str,
    principal: Principal,
    steps: int | None = None,
    devices: int | None = None,
) -> Job:
    """Queue a failed or canceled job again (optionally to more steps, or on another number
    of devices), or a succeeded one to more steps, and enqueue it.

    If the broker cannot be reached the job is put back exactly as it was, or it would stay
    'queued' with no message to run it and the client's retry would be refused (409).
    """
    job = get_job(session, job_id=job_id, owner_id=principal.scope)
    config = _resumed_config(job, steps, devices)
    owner = job.owner_id or principal.owner_id
    datasets.check_training_dataset(session, settings, config, owner_id=job.owner_id)
    limits.check_new_job(
        session,
        settings,
        owner_id=owner,
        config=config,
        field="steps",
        devices_field="devices",
        resume=True,
    )
    before = {
        k: getattr(job, k)
        for k in (
            "status",
            "config",
            "total_steps",
            "cancel_requested",
            "error",
            "finished_at",
            "enqueued_at",
        )
    }
    resume_job(session, job_id=job_id, owner_id=principal.scope, steps=steps, devices=devices)
    session.commit()
    try:
        queue.enqueue(job.id, job_devices(job.config))
    except Exception:
        for key, value in before.items():
            setattr(job, key, value)
        session.commit()
        raise
    return job


def resume_job(
    session: Session,
    *,
    job_id: str,
    owner_id: str | None = None,
    steps: int | None = None,
    devices: int | None = None,
) -> Job:
    """Queue a failed, canceled or (to more steps) succeeded job again; it continues from its
    last checkpoint."""
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    config = _resumed_config(job, steps, devices)
    job.config = config.model_dump(mode="json")
    job.total_steps = config.steps
    job.status = JobStatus.queued
    job.cancel_requested = False
    job.error = None
    job.finished_at = None
    job.lease_owner = job.lease_expires_at = None
    job.enqueued_at = utcnow()
    job.version = Job.version + 1  # atomic, beside the worker's writes
    session.flush()
    return job


def _resumed_config(job: Job, steps: int | None, devices: int | None = None) -> AnyConfig:
    """The config a resume of ``job`` trains to, or why the job cannot be resumed so."""
    _check_resume_state(job, steps)
    fields = dict(job.config)
    if steps is not None:
        done = max(job.step, job.total_steps) if job.status == JobStatus.succeeded else job.step
        if steps <= done:
            raise InvalidInput(
                f"steps must be greater than the {done} steps already done", field="steps"
            )
        fields["steps"] = steps
    if devices is None:
        return parse_config(fields)  # of the job's kind
    if "devices" not in fields:  # a translation kind: one device for now
        raise InvalidInput(f"devices: job {job.id} trains on one device only", field="devices")
    try:
        return parse_config({**fields, "devices": devices})
    except ValidationError as exc:  # e.g. a batch_size that does not split over them
        said = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise InvalidInput(f"devices: {said}", field="devices") from exc


def _check_resume_state(job: Job, steps: int | None) -> None:
    """Only a failed or canceled job resumes as it is; a succeeded one, to more steps."""
    if job.status == JobStatus.succeeded:
        if steps is None:
            raise Conflict(
                f"job {job.id} succeeded at step {job.step}; to train it longer, resume it "
                f"with steps above {job.total_steps}",
                field="steps",
            )
    elif job.status not in (JobStatus.failed, JobStatus.canceled):
        raise Conflict(
            f"only failed, canceled or (with more steps) succeeded jobs can be resumed; "
            f"job {job.id} is {job.status}"
        )


def delete_job(
    session: Session, store: ArtifactStore, *, job_id: str, owner_id: str | None = None
) -> None:
    """Delete a job that is not running, with its checkpoints: the record first, then the files.

    Its queued and running folder translations end ``canceled`` in the same transaction, with
    an ``error`` saying why (their records and files stay until they are deleted): a queued
    one's message finds nothing to run, a running one's worker finds its lease gone and stops.
    """
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    if job.status == JobStatus.running:
        raise Conflict(f"job {job_id} is running; cancel it first")
    if job.status == JobStatus.queued:
        job.status = JobStatus.canceled  # a message still in the queue will find nothing to run
    now = utcnow()
    session.execute(
        update(Translation)
        .where(
            Translation.job_id == job_id,
            Translation.status.in_([JobStatus.queued, JobStatus.running]),
        )
        .values(
            status=JobStatus.canceled,
            cancel_requested=True,
            error=f"canceled: its job {job_id} was deleted",
            finished_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    session.delete(job)
    session.commit()
    store.discard(f"jobs/{job_id}")
