"""Celery settings as plain data, so the API (sender) and worker (consumer) agree.

No Celery import here: app/core stays free of it; both sides build their Celery
app from ``celery_config(settings)``.
"""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings

TRAIN_TASK = "ganforge.train"
RECOVER_TASK = "ganforge.recover_stale_jobs"


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
        "task_routes": {TRAIN_TASK: {"queue": settings.queue}},
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
