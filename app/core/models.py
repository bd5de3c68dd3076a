"""Database records: datasets, jobs, checkpoints, workers, API keys. The database is the truth."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.core.db import utcnow


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


FINISHED = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled})


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    owner_id: Mapped[str | None] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # npz | image-folder | paired | unpaired
    path: Mapped[str] = mapped_column(String(500))  # store key
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    num_images: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    image_size: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int | None] = mapped_column(Integer)
    class_names: Mapped[list[Any] | None] = mapped_column(JSON)
    # paired | unpaired: per domain A and B, {num_images, channels, image_size, val_images}
    domains: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    val_size: Mapped[int | None] = mapped_column(Integer)  # held out for validation (pairs)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_idempotency"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    owner_id: Mapped[str | None] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True, default=JobStatus.queued)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # progress, written by the worker (throttled)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float, default=0.0)
    losses: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    images_per_sec: Mapped[float | None] = mapped_column(Float)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    # the augmentation probability at the last report (None: no augmentation, or not yet)
    augment_p: Mapped[float | None] = mapped_column(Float)
    # what the worker is doing while the job runs (app.core.jobs.runs.PHASES)
    phase: Mapped[str | None] = mapped_column(String(30))
    error: Mapped[str | None] = mapped_column(Text)
    # control: cancel flag read by the loop; lease so that one worker runs a job at a time
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims by a worker
    worker_losses: Mapped[int] = mapped_column(Integer, default=0)  # its worker died mid-run
    # when the latest training message was sent: the sweep re-sends one that got lost
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    # +1 on every change a watcher would want to see (progress, status, a scored checkpoint;
    # not lease renewals): the ids of the job's server-sent events
    version: Mapped[int] = mapped_column(Integer, default=0)
    # the checkpoint with the lowest FD so far (kept in step with the checkpoint rows)
    best_checkpoint_id: Mapped[str | None] = mapped_column(String(40))
    best_fd: Mapped[float | None] = mapped_column(Float)
    # divergences rolled back (config.on_divergence = "rollback"), oldest first
    rollbacks: Mapped[list[Any] | None] = mapped_column(JSON)
    # where to announce the job's events, and which ones (app.core.integrations.webhooks)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_events: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_step_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="Checkpoint.step"
    )
    metrics: Mapped[list[JobMetric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobMetric.step_to"
    )


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ckpt"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))  # store key of the checkpoint directory
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[dict[str, Any]] = mapped_column(JSON)  # name -> {sha256, size}
    losses: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # quality, written by the worker after the checkpoint lands (app.core.serving.scores)
    score_status: Mapped[str] = mapped_column(String(20), default="pending")  # scored|failed|off
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_fd: Mapped[float | None] = mapped_column(Float)  # the lower FD of its generators
    preferred: Mapped[str | None] = mapped_column(String(8))  # "ema" | "raw": which scored better
    event_version: Mapped[int | None] = mapped_column(Integer)  # job.version when it was final
    write_seconds: Mapped[float | None] = mapped_column(Float)  # writing its files took
    score_seconds: Mapped[float | None] = mapped_column(Float)  # scoring it took
    # Pruned to keep_checkpoints: the files are gone, the row stays as the run's history.
    pruned_at: Mapped[datetime | None] = mapped_column(DateTime)

    job: Mapped[Job] = relationship(back_populates="checkpoints")


class JobMetric(Base):
    """A bucket of the loss history: the mean of the progress reports from step_from to step_to.

    Buckets are merged pairwise when a job has too many (app.core.metrics), so a long run
    keeps a bounded, evenly coarse history.
    """

    __tablename__ = "job_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step_from: Mapped[int] = mapped_column(Integer)
    step_to: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime)  # when the last report in it was made
    d_loss: Mapped[float | None] = mapped_column(Float)
    g_loss: Mapped[float | None] = mapped_column(Float)
    images_per_sec: Mapped[float | None] = mapped_column(Float)
    augment_p: Mapped[float | None] = mapped_column(Float)  # the mean of the reports' p
    reports: Mapped[int] = mapped_column(Integer, default=1)

    job: Mapped[Job] = relationship(back_populates="metrics")


class Lock(Base):
    """A named lock with a lease, for work one process of the fleet should do (and others wait for)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Worker(Base):
    """Heartbeats of worker processes, so /readyz can tell whether any is alive and a job on
    several devices whether any can take it."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # what its running job reports (for /metrics: one scrape of any API sees the fleet)
    job_id: Mapped[str | None] = mapped_column(String(40))
    images_per_sec: Mapped[float | None] = mapped_column(Float)
    # the devices it trains a job on (GANFORGE_WORKER_DEVICES); jobs up to that many fit it
    devices: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """An API key. Only a hash of its secret is stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    owner_id: Mapped[str] = mapped_column(String(40), index=True)  # keys of one owner share data
    secret_sha256: Mapped[str] = mapped_column(String(64))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class WebhookSecret(Base):
    """An owner's webhook signing secret (Standard Webhooks: ``whsec_`` + base64)."""

    __tablename__ = "webhook_secrets"

    owner_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event to deliver: the outbox row, written in the transaction of the change it
    announces, and its delivery attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str | None] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(20))  # started|checkpoint|succeeded|failed|canceled
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[list[Any]] = mapped_column(JSON, default=list)  # {at, status_code, error}
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)


class Translation(Base):
    """A folder of images (an uploaded zip) translated by one checkpoint, on the worker.

    The checkpoint is fixed at submit (a ref such as ``latest`` is resolved then); scores
    pruning keeps it while the translation is unfinished (app.core.serving.scores.prune_rows).
    The job and checkpoint are plain ids, not foreign keys: a finished translation's result
    outlives its job. Leased like a job (app.core.serving.folder_translations).
    """

    __tablename__ = "translations"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_translations_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tr"))
    owner_id: Mapped[str | None] = mapped_column(String(40), index=True)
    job_id: Mapped[str] = mapped_column(String(40))
    checkpoint_id: Mapped[str] = mapped_column(String(40), index=True)
    checkpoint_step: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(8))  # a2b | b2a
    ema: Mapped[bool] = mapped_column(Boolean)  # the weights used, as resolved at submit
    filename: Mapped[str | None] = mapped_column(String(255))  # the uploaded zip's name
    status: Mapped[str] = mapped_column(String(20), index=True, default=JobStatus.queued)
    total: Mapped[int] = mapped_column(Integer)  # images in the archive
    done: Mapped[int] = mapped_column(Integer, default=0)  # of them handled (translated or not)
    failed: Mapped[int] = mapped_column(Integer, default=0)  # of them not translated
    # {"translated": n, "failed": [{"name", "error"}], "skipped": [names]} once finished
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed, or was canceled (job deleted)
    result_bytes: Mapped[int | None] = mapped_column(BigInteger)
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)  # the unpacked inputs, stored
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # what the key stands for
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_losses: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
