"""Runs one training job: claim it, train it with hooks that write back, record the end.

Kept apart from the Celery task so it can be tested without a broker; the task
only hands it a job id.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from sqlalchemy.orm import Session

from app.core.artifacts.selection import get_store
from app.core.artifacts.store import ArtifactStore, LocalStore
from app.core.datasets.job_data import load_job_pairs, upload_path
from app.core.db import session_scope
from app.core.jobs import recovery, runs
from app.core.jobs.queue import JobQueue
from app.core.models import Dataset, JobStatus
from app.core.serving import scores
from app.core.settings import Settings, get_settings
from gan_core.checkpoint import CheckpointError
from gan_core.data import DatasetError, ImageTensorDataset, load_dataset
from gan_core.data.pairs import PairDataset
from gan_core.jobconfig import AnyConfig, parse_config
from gan_core.launch import RankFailed
from gan_core.training import TrainingDiverged, train
from gan_core.translation.config import TranslationConfig
from worker.group import train_group
from worker.hooks import SHUTDOWN, HandBack, JobHooks, LeaseKeeper, LeaseLost

log = logging.getLogger("ganforge.worker")
_scorers: dict[tuple[str, str], scores.Scorers] = {}  # per database and store, for the process


def _scorers_for(settings: Settings, store: LocalStore, worker_id: str) -> scores.Scorers:
    """This process's scorers (kept between jobs: a dataset's extractor loads once)."""
    key = (settings.resolved_database_url, str(store.root))
    if key not in _scorers:
        _scorers[key] = scores.Scorers(settings, store, holder=worker_id)
    return _scorers[key]


def _load_upload(
    store: ArtifactStore, row: Dataset, config: AnyConfig
) -> ImageTensorDataset | PairDataset:
    if isinstance(config, TranslationConfig):  # pairs or two domains: row.kind says which
        return load_job_pairs(store, config, row)  # as the grids load it: the same split
    try:
        return load_dataset(
            f"{row.kind}:{upload_path(store, row)}",
            image_size=config.image_size,
            channels=config.channels,
        )
    except OSError as exc:  # a read failure, not the store-write failure reported below
        raise DatasetError(f"uploaded dataset {row.id} cannot be read: {exc}") from exc


def _send(s: Session, queue: JobQueue | None, job_id: str, devices: int) -> None:
    """Send a job we put back in the queue; the next sweep of any worker sends it if not."""
    try:
        if queue is None:
            raise RuntimeError("no queue to send to")
        queue.enqueue(job_id, devices)
    except Exception:
        recovery.mark_unsent(s, job_ids=[job_id])


def _hand_back(url: str, job_id: str, worker_id: str, queue: JobQueue | None, devices: int) -> None:
    """Give a job we stopped for a shutdown back to the queue, at once and without a loss."""
    with session_scope(url) as s:
        if not runs.release_job(s, job_id=job_id, worker_id=worker_id):
            return
        _send(s, queue, job_id, devices)
    log.warning(
        "job %s handed back to the queue for a shutdown; it resumes from its checkpoint", job_id
    )


def _group_failed(
    settings: Settings,
    job_id: str,
    worker_id: str,
    queue: JobQueue | None,
    devices: int,
    reason: str,
) -> str:
    """A rank of the job's group died or stalled: back to the queue at once, to resume from
    its last checkpoint, counted as a lost worker (failed after GANFORGE_MAX_ATTEMPTS)."""
    with session_scope(settings.resolved_database_url) as s:
        outcome = runs.requeue_after_loss(
            s,
            job_id=job_id,
            worker_id=worker_id,
            reason=reason,
            max_attempts=settings.max_attempts,
        )
        if outcome == "queued":
            _send(s, queue, job_id, devices)
    log.warning("job %s: %s; %s", job_id, reason, outcome)
    return outcome


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
    store = get_store(settings.resolved_store_dir, settings.store_url)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    if SHUTDOWN.is_set() and queue is not None:  # a message taken while shutting down
        with session_scope(url) as s:
            devices = recovery.devices_of(s, [job_id])[job_id]
        queue.enqueue(job_id, devices)
        return "deferred"
    with session_scope(url) as s:
        job = runs.claim_job(
            s, job_id=job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds
        )
        if job is None:
            log.info("job %s is not claimable (finished, canceled, or running elsewhere)", job_id)
            return "skipped"
        config = parse_config(job.config)
        upload = s.get(Dataset, job.dataset_id) if job.dataset_id else None

    lease = LeaseKeeper(url, job_id, worker_id, settings.lease_seconds)
    lease.start()
    job_hooks = JobHooks(
        settings,
        store,
        _scorers_for(settings, store, worker_id),
        job_id=job_id,
        worker_id=worker_id,
        config=config,
        lease=lease,
    )
    status, error, step, group_failed = JobStatus.failed, None, None, None
    try:
        dataset = _load_upload(store, upload, config) if upload is not None else None
        run_dir, hooks = store.run_dir(job_id), job_hooks.train_hooks()
        dirs, download = settings.dataset_dirs, settings.allow_download
        if getattr(config, "devices", 1) > 1:  # ranks 1..N-1 in child processes
            result = train_group(
                config,
                run_dir,
                hooks,
                dataset=dataset,
                data_dirs=dirs,
                allow_download=download,
                timeout_s=settings.collective_timeout_seconds,
            )
        else:
            result = train(
                config, run_dir, hooks, dataset=dataset, data_dirs=dirs, allow_download=download
            )
        status = JobStatus.canceled if result.status == "canceled" else JobStatus.succeeded
        step = result.step
    except LeaseLost:
        pass
    except RankFailed as exc:  # another rank died or stalled: like a worker that died
        group_failed = str(exc)
    except HandBack:  # a shutdown before this run trained a step: back as it was
        status = JobStatus.canceled
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
        job_hooks.idle()
    if lease.lost.is_set():
        log.warning("job %s was taken over by another worker; not recording an end", job_id)
        return "lost"
    devices = getattr(config, "devices", 1)
    if status == JobStatus.canceled and SHUTDOWN.is_set() and not lease.cancel.is_set():
        _hand_back(url, job_id, worker_id, queue, devices)
        return "released"
    if group_failed is not None:
        return _group_failed(settings, job_id, worker_id, queue, devices, group_failed)
    with session_scope(url) as s:
        runs.finish_job(
            s, job_id=job_id, worker_id=worker_id, status=status, error=error, step=step
        )
    log.info("job %s ended %s%s", job_id, status, f": {error}" if error else "")
    return str(status)
