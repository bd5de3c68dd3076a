"""The worker's background duties: a heartbeat for /readyz, and the sweep that recovers jobs
no worker would otherwise run (see app.core.jobs.recovery.sweep_jobs)."""

from __future__ import annotations

import logging
import socket
import threading

from sqlalchemy import delete

from app.core.db import session_scope, utcnow
from app.core.jobs import recovery
from app.core.jobs.queue import JobQueue, queue_length
from app.core.models import Worker
from app.core.serving import folder_runs
from app.core.settings import Settings, get_settings
from worker.group import worker_devices

log = logging.getLogger("ganforge.worker")


def sweep_once(settings: Settings, queue: JobQueue) -> recovery.Sweep:
    """Recover jobs no worker will run (see app.core.jobs.recovery.sweep_jobs) and send their messages."""
    with session_scope(settings.resolved_database_url) as s:
        done = recovery.sweep_jobs(
            s,
            max_attempts=settings.max_attempts,
            requeue_after=settings.requeue_after_seconds,
            waiting=lambda: queue_length(settings),  # so jobs waiting their turn are not re-sent
        )
        devices = recovery.devices_of(s, done.to_send)
        for i, job_id in enumerate(done.to_send):
            try:
                queue.enqueue(job_id, devices[job_id])
            except Exception:
                # Broker away: without a message nothing would ever run these 'queued' jobs;
                # the next sweep sends them again.
                recovery.mark_unsent(s, job_ids=done.to_send[i:])
                raise
    _sweep_translations(settings, queue)
    for job_id in done.requeued:
        log.warning("job %s lost its worker (lease expired); re-queued", job_id)
    for job_id in done.resent:
        log.warning(
            "job %s was queued for %.0f s and the broker held fewer messages than queued "
            "jobs; its message was sent again",
            job_id,
            settings.requeue_after_seconds,
        )
    for job_id in done.canceled:
        log.warning("job %s was canceled while no worker held it; marked canceled", job_id)
    for job_id in done.failed:
        log.warning("job %s lost its worker %d times; failed", job_id, settings.max_attempts)
    return done


def _sweep_translations(settings: Settings, queue: JobQueue) -> None:
    """The same for folder translations (app.core.serving.folder_runs.sweep)."""
    with session_scope(settings.resolved_database_url) as s:
        done = folder_runs.sweep(
            s,
            max_attempts=settings.max_attempts,
            requeue_after=settings.requeue_after_seconds,
            waiting=lambda: queue_length(settings),
        )
        for translation_id in done["to_send"]:
            try:
                queue.send_translation(translation_id)
            except Exception:
                folder_runs.mark_unsent(s, translation_id=translation_id)
                raise
    for translation_id in done["requeued"]:
        log.warning("translation %s lost its worker (lease expired); re-queued", translation_id)
    for translation_id in done["failed"]:
        log.warning(
            "translation %s lost its worker %d times; failed", translation_id, settings.max_attempts
        )


def heartbeat_loop(
    worker_id: str, stop: threading.Event, queue: JobQueue, interval: float = 10.0
) -> None:
    """Record that this worker process is alive (for /readyz) with the devices it offers (a
    job on N devices needs one with N), and recover jobs of dead workers."""
    settings = get_settings()
    interval = min(interval, settings.lease_seconds / 2)
    while True:
        try:
            with session_scope(settings.resolved_database_url) as s:
                s.merge(
                    Worker(
                        id=worker_id,
                        hostname=socket.gethostname(),
                        last_seen=utcnow(),
                        devices=worker_devices(settings.worker_devices),
                    )
                )
            sweep_once(settings, queue)
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)
        if stop.wait(interval):
            return


def forget_worker(worker_id: str) -> None:
    """Remove a worker's heartbeat row as it shuts down (a crash leaves it to age out)."""
    try:
        with session_scope(get_settings().resolved_database_url) as s:
            s.execute(delete(Worker).where(Worker.id == worker_id))
    except Exception:
        log.warning("could not remove the worker's heartbeat row", exc_info=True)
