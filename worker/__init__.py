"""Celery app and tasks: thin shells that hand job ids to worker.runner."""
