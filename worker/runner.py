"""Runs one training job: claim it, train it with hooks that write back, record the end.

Kept apart from the Celery task so it can be tested without a broker; the task
only hands it a job id.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path

from app.core import runs
from app.core.db import session_scope
from app.core.models import Dataset, JobStatus
from app.core.queue import JobQueue
from app.core.settings import Settings, get_settings
from app.core.store import ArtifactStore, get_store
from gan_core.checkpoint import CheckpointError, CheckpointInfo
from gan_core.config import TrainConfig
from gan_core.data import DatasetError, ImageTensorDataset, load_dataset
from gan_core.training import Progress, TrainHooks, TrainingDiverged, train

log = logging.getLogger("ganforge.worker")


# Set in a pool child by its SIGTERM handler (worker.celery_app): the running job writes a
# checkpoint at its next stop check and is handed back to the queue, for any worker to resume.
SHUTDOWN = threading.Event()


class LeaseLost(Exception):
    """Another worker holds the job now: stop at once, write no checkpoint, record nothing."""


class LeaseKeeper(threading.Thread):
    """Renews the job's lease in the background and notices cancel requests."""

    def __init__(self, url: str, job_id: str, worker_id: str, lease_seconds: float):
        super().__init__(daemon=True, name=f"lease-{job_id}")
        self.url, self.job_id, self.worker_id, self.lease_seconds = (
            url,
            job_id,
            worker_id,
            lease_seconds,
        )
        self.cancel = threading.Event()  # a user asked the job to stop
        self.lost = threading.Event()  # the lease was taken from us: stop, write nothing
        self._done = threading.Event()

    def run(self) -> None:
        interval = max(0.2, min(self.lease_seconds / 4, 2.0))
        while not self._done.wait(interval):
            try:
                with session_scope(self.url) as s:
                    flag = runs.renew_lease(
                        s,
                        job_id=self.job_id,
                        worker_id=self.worker_id,
                        lease_seconds=self.lease_seconds,
                    )
            except Exception:  # database briefly away: keep training, try again
                log.warning("could not renew lease of %s", self.job_id, exc_info=True)
                continue
            if flag is None:
                self.lost.set()
                return
            if flag:
                self.cancel.set()

    def stop(self) -> None:
        self._done.set()


def _load_upload(store: ArtifactStore, row: Dataset, config: TrainConfig) -> ImageTensorDataset:
    path = store.local_path(row.path)
    try:
        return load_dataset(
            f"{row.kind}:{path}", image_size=config.image_size, channels=config.channels
        )
    except OSError as exc:  # a read failure, not the store-write failure reported below
        raise DatasetError(f"uploaded dataset {row.id} cannot be read: {exc}") from exc


def _hand_back(url: str, job_id: str, worker_id: str, queue: JobQueue | None) -> None:
    """Give a job we stopped for a shutdown back to the queue, at once and without a loss."""
    with session_scope(url) as s:
        if not runs.release_job(s, job_id=job_id, worker_id=worker_id):
            return
        try:
            if queue is None:
                raise RuntimeError("no queue to send to")
            queue.enqueue(job_id)
        except Exception:
            runs.mark_unsent(s, job_ids=[job_id])  # the next sweep of any worker sends it
    log.warning(
        "job %s handed back to the queue for a shutdown; it resumes from its checkpoint", job_id
    )


def run_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    worker_id: str | None = None,
    queue: JobQueue | None = None,
) -> str:
    """Train one job to its end; returns the final status, 'skipped' if not ours to run, or
    'released' if a shutdown stopped it (checkpointed and back in the queue)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    store = get_store(settings.resolved_store_dir)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    if SHUTDOWN.is_set() and queue is not None:  # a message taken while shutting down
        queue.enqueue(job_id)
        return "deferred"
    with session_scope(url) as s:
        job = runs.claim_job(
            s, job_id=job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds
        )
        if job is None:
            log.info("job %s is not claimable (finished, canceled, or running elsewhere)", job_id)
            return "skipped"
        config = TrainConfig.model_validate(job.config)
        upload = s.get(Dataset, job.dataset_id) if job.dataset_id else None

    lease = LeaseKeeper(url, job_id, worker_id, settings.lease_seconds)
    lease.start()

    def on_start(resolved: TrainConfig) -> None:
        with session_scope(url) as s:
            runs.record_resolved_config(
                s, job_id=job_id, worker_id=worker_id, config=resolved.model_dump(mode="json")
            )

    def on_progress(p: Progress) -> None:
        with session_scope(url) as s:
            runs.record_progress(s, job_id=job_id, worker_id=worker_id, progress=p)

    def on_checkpoint(info: CheckpointInfo) -> None:
        key = store.publish_checkpoint(job_id, Path(info.path))
        with session_scope(url) as s:
            recorded = runs.record_checkpoint(
                s,
                job_id=job_id,
                step=info.step,
                key=key,
                size_bytes=info.size_bytes,
                files=info.files,
                losses=info.losses,
                keep=config.keep_checkpoints,
                worker_id=worker_id,
            )
        if recorded is None:  # the lease went to another worker before we noticed
            lease.lost.set()
            raise LeaseLost(job_id)

    def should_stop() -> bool:
        if lease.lost.is_set():  # not a cancel: the loop's save-on-stop must not run
            raise LeaseLost(job_id)
        return lease.cancel.is_set() or SHUTDOWN.is_set()

    hooks = TrainHooks(
        on_start=on_start,
        on_progress=on_progress,
        should_stop=should_stop,
        on_checkpoint=on_checkpoint,
        progress_interval=settings.progress_interval,
    )
    status, error, step = JobStatus.failed, None, None
    try:
        dataset = _load_upload(store, upload, config) if upload is not None else None
        result = train(
            config,
            store.run_dir(job_id),
            hooks,
            dataset=dataset,
            data_dirs=settings.dataset_dirs,
            allow_download=settings.allow_download,
        )
        status = JobStatus.canceled if result.status == "canceled" else JobStatus.succeeded
        step = result.step
    except LeaseLost:
        pass
    except TrainingDiverged as exc:  # the last good checkpoint stays listed and samples
        error = str(exc)
    except (DatasetError, CheckpointError, ValueError) as exc:
        error = str(exc)
    except OSError as exc:  # disk full, store unwritable
        error = f"could not write to the artifact store: {exc}"
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        lease.stop()
    if lease.lost.is_set():
        log.warning("job %s was taken over by another worker; not recording an end", job_id)
        return "lost"
    if status == JobStatus.canceled and SHUTDOWN.is_set() and not lease.cancel.is_set():
        _hand_back(url, job_id, worker_id, queue)
        return "released"
    with session_scope(url) as s:
        runs.finish_job(
            s, job_id=job_id, worker_id=worker_id, status=status, error=error, step=step
        )
    log.info("job %s ended %s%s", job_id, status, f": {error}" if error else "")
    return str(status)
