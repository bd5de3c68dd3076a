"""Celery tasks. Like a web view: take ids, hand them to the logic, nothing else."""

from __future__ import annotations

from app.core.jobs.queue import TRAIN_TASK, TRANSLATE_TASK, JobQueue
from app.core.settings import get_settings
from worker.celery_app import app
from worker.folder_runner import run_translation
from worker.runner import run_job


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train_job(job_id: str) -> str:
    return run_job(job_id, queue=JobQueue(app, get_settings()))


@app.task(name=TRANSLATE_TASK, acks_late=True, reject_on_worker_lost=True)
def translate_folder(translation_id: str) -> str:
    return run_translation(translation_id, queue=JobQueue(app, get_settings()))
