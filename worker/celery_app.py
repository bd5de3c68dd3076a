"""The Celery application the worker runs (and the API sends to, by task name)."""

from __future__ import annotations

import os
import socket
import threading

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from app.core.queue import JobQueue, celery_config
from app.core.settings import get_settings


def make_celery() -> Celery:
    app = Celery("ganforge")
    app.conf.update(celery_config(get_settings()))
    app.conf.update(include=["worker.tasks"])
    return app


app = make_celery()
_heartbeat_stop = threading.Event()


@worker_ready.connect
def _start_heartbeat(**_kwargs) -> None:
    from worker.runner import heartbeat_loop

    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    threading.Thread(
        target=heartbeat_loop, args=(worker_id, _heartbeat_stop, JobQueue(app, get_settings())),
        daemon=True,
        name="ganforge-heartbeat",
    ).start()


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    _heartbeat_stop.set()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked pool child must not share the parent's database connections.
    from app.core.db import forget_engines_after_fork

    forget_engines_after_fork()
