"""The job queue: Celery settings as plain data, and the one function that sends a job.

No Celery import here: app/core stays free of it. The API and the worker each build a
Celery app from ``celery_config(settings)`` and wrap it in a ``JobQueue``; everything that
puts a job on the queue (a new job, a resume, the stale-job sweep, a graceful shutdown)
goes through ``JobQueue.enqueue``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from app.core.errors import Unavailable
from app.core.settings import Settings

log = logging.getLogger("ganforge.queue")
TRAIN_TASK = "ganforge.train"
TRANSLATE_TASK = "ganforge.translate_folder"  # app.core.serving.folder_translations


class TaskSender(Protocol):
    """What JobQueue needs of a Celery app."""

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any: ...


MAX_DEVICES = 64  # config.devices' upper bound (gan_core.config)


def queue_for(queue: str, devices: int) -> str:
    """The Celery queue of a job on ``devices`` devices: the training queue itself for one,
    ``<queue>.devices-N`` for N > 1. A worker with D devices consumes the queues for 1..D
    (``worker_queues``), so a job only ever reaches a worker it fits."""
    return queue if devices <= 1 else f"{queue}.devices-{devices}"


def worker_queues(queue: str, devices: int) -> list[str]:
    """The queues a worker with ``devices`` devices takes jobs from."""
    return [queue_for(queue, n) for n in range(1, devices + 1)]


def job_devices(config: dict[str, Any] | None) -> int:
    """The devices a job's stored config asks for (1 when it names none)."""
    return int((config or {}).get("devices") or 1)


class JobQueue:
    """Sends ``ganforge.train(job_id)`` to the training queue of the job's device count."""

    def __init__(self, sender: TaskSender, settings: Settings):
        self.sender, self.queue = sender, settings.queue

    def enqueue(self, job_id: str, devices: int = 1) -> None:
        """Send one training message; Unavailable (503) when the broker cannot be reached."""
        self._send(TRAIN_TASK, job_id, queue_for(self.queue, devices))

    def send_translation(self, translation_id: str) -> None:
        """Send one folder-translation message, on the training queue; 503 as ``enqueue``."""
        self._send(TRANSLATE_TASK, translation_id, self.queue)

    def _send(self, task: str, job_id: str, queue: str) -> None:
        try:
            # A short retry: with the broker down the client gets a 503 in about a second,
            # not a request hanging on kombu's default back-off.
            self.sender.send_task(
                task,
                args=[job_id],
                queue=queue,
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0.2,
                    "interval_step": 0.3,
                    "interval_max": 0.5,
                },
            )
        except (
            Exception
        ) as exc:  # kombu raises OperationalError and friends when the broker is down
            log.warning("could not enqueue %s: %s", job_id, exc)
            raise Unavailable("the job queue (broker) is not reachable; try again") from exc


def celery_config(settings: Settings) -> dict[str, Any]:
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.embedded:
        # Embedded mode: a broker that needs no server -- message files in a folder
        # shared by `ganforge serve` and the worker child it starts.
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),  # kombu's default is ./control
            "store_processed": False,
            # kombu polls the folder; its 1 s default was most of POST-to-first-step
            "polling_interval": 0.1,
        }
    return {
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,  # fail fast, so the API can answer 503 while Redis is down
        "broker_connection_max_retries": None,  # workers keep reconnecting after a Redis restart
        "task_default_queue": settings.queue,
        "task_routes": {
            TRAIN_TASK: {"queue": settings.queue},
            TRANSLATE_TASK: {"queue": settings.queue},
        },
        # Hours-long GPU jobs: ack only after the task ends, so a worker that dies
        # leaves the message to be redelivered; take one message at a time.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,  # the database, not a result backend, is the truth
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def queue_length(settings: Settings) -> int | None:
    """Training messages waiting in the broker (on the queues of every device count), or
    None when it cannot say (or is down)."""
    try:
        if settings.embedded:  # the filesystem transport: one file per message
            return sum(1 for p in (settings.broker_dir / "queue").iterdir() if p.is_file())
        url = settings.broker_url or ""
        if url.startswith(("redis://", "rediss://")):
            import redis

            with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as r:
                pipe = r.pipeline()
                for name in worker_queues(settings.queue, MAX_DEVICES):
                    pipe.llen(name)
                return int(sum(pipe.execute()))
    except Exception as exc:
        log.info("queue length unknown: %s", exc)
    return None
