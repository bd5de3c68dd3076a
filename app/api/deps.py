"""Dependencies shared by routes: settings, database session, store, sampler, queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import Unavailable
from app.core.queue import TRAIN_TASK
from app.core.sampling import Sampler
from app.core.settings import Settings
from app.core.store import LocalStore

log = logging.getLogger("ganforge.api")


@dataclass
class Services:
    """What one API process holds for its lifetime (built once in create_app)."""

    settings: Settings
    store: LocalStore
    sampler: Sampler
    celery: object  # a Celery app used only to send tasks by name

    def enqueue(self, job_id: str) -> None:
        try:
            # A short retry: with the broker down the client gets a 503 in about a second,
            # not a request hanging on kombu's default back-off.
            self.celery.send_task(  # type: ignore[attr-defined]
                TRAIN_TASK, args=[job_id], queue=self.settings.queue, retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3,
                              "interval_max": 0.5},
            )
        except Exception as exc:  # kombu raises OperationalError and friends when the broker is down
            log.warning("could not enqueue %s: %s", job_id, exc)
            raise Unavailable("the job queue (broker) is not reachable; try again") from exc


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    with session_scope(services.settings.resolved_database_url) as session:
        yield session


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
