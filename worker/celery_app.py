"""The Celery application the worker runs (and the API sends to, by task name)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from typing import Any

from billiard.process import active_children
from celery import Celery
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from app.core.jobs.queue import JobQueue, celery_config
from app.core.settings import get_settings


def make_celery() -> Celery:
    app = Celery("ganforge")
    app.conf.update(celery_config(get_settings()))
    app.conf.update(include=["worker.tasks"])
    return app


app = make_celery()
_heartbeat_stop = threading.Event()
_heartbeat: threading.Thread | None = None


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@worker_ready.connect
def _start_heartbeat(**_kwargs: object) -> None:
    from worker.sweep import heartbeat_loop

    global _heartbeat
    _heartbeat = threading.Thread(
        target=heartbeat_loop,
        args=(_worker_id(), _heartbeat_stop, JobQueue(app, get_settings())),
        daemon=True,
        name="ganforge-heartbeat",
    )
    _heartbeat.start()


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs: object) -> None:
    # A worker that exits says so: its row goes, so /readyz and a job waiting for its
    # devices (queued_reason) know at once, not when the heartbeat has aged out.
    from worker.sweep import forget_worker

    _heartbeat_stop.set()
    if _heartbeat is not None:
        _heartbeat.join(10)
    forget_worker(_worker_id())


@worker_process_init.connect
def _fresh_connections(**_kwargs: object) -> None:
    # A forked pool child must not share the parent's database connections.
    from app.core.db import forget_engines_after_fork

    forget_engines_after_fork()


_sigterm_before: Any = None


@task_prerun.connect
def _graceful_sigterm(**_kwargs: Any) -> None:
    # In the pool child, for the length of a task (billiard resets the child's signal handlers
    # after worker_process_init, so not there). SIGTERM -- a deploy, `docker stop`, serve
    # exiting -- must not kill training mid-step: the job checkpoints at its next stop check
    # and goes back to the queue (worker.runner). Between tasks SIGTERM does what billiard
    # expects, or the pool could never be shut down.
    global _sigterm_before
    from worker.hooks import SHUTDOWN

    _sigterm_before = signal.signal(signal.SIGTERM, lambda *_: SHUTDOWN.set())


@task_postrun.connect
def _default_sigterm(**_kwargs: Any) -> None:
    # (A SHUTDOWN that was set stays set: later tasks of this child are handed on unrun.)
    if _sigterm_before is not None:
        signal.signal(signal.SIGTERM, _sigterm_before)


@worker_shutting_down.connect
def _stop_training_gracefully(**_kwargs: Any) -> None:
    # Celery's warm shutdown waits for the running task, which may train for hours; a
    # SIGTERM that reached only this process is passed on, so the task hands its job back.
    # Only while a task runs: an idle pool child blocks reading the task queue under a lock
    # it shares with this process, and killed there it would leave this process's own exit
    # waiting for that lock forever (a worker that outlived serve).
    from celery.worker import state

    if not state.active_requests:
        return
    for child in active_children():
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGTERM)
