"""Dependencies shared by routes: settings, database session, store, sampler, queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core import auth
from app.core.cache import TTLCache
from app.core.db import session_scope
from app.core.errors import Unavailable
from app.core.limits import RateLimiter
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
    sample_limiter: RateLimiter
    # Verified keys, so hot paths skip the database: a revoked key stops working within 5 s.
    key_cache: TTLCache[auth.Principal] = field(default_factory=lambda: TTLCache(ttl=5.0))
    # (job, checkpoint id, owner scope) -> (checkpoint row, num_classes), for 1 s: a repeated
    # sample request for a fixed checkpoint is answered without a database round trip.
    checkpoint_refs: TTLCache[tuple] = field(default_factory=lambda: TTLCache(ttl=1.0))

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


async def get_services(request: Request) -> Services:  # async: no threadpool hop
    return request.app.state.services


def get_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    with session_scope(services.settings.resolved_database_url) as session:
        yield session


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]


_bearer = HTTPBearer(auto_error=False, description="an API key: `ganforge keys create --name NAME`")


async def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth.Principal:
    """Who the request acts for; 401 with WWW-Authenticate when the key is missing or wrong."""
    if not services.settings.auth:
        return auth.Principal(owner_id=auth.ANONYMOUS, admin=True, key_id=None)
    if credentials is None:
        raise HTTPException(401, "an API key is required: Authorization: Bearer KEY",
                            headers={"WWW-Authenticate": 'Bearer realm="ganforge"'})
    token = credentials.credentials
    principal = services.key_cache.get(token)
    if principal is None:

        def lookup() -> auth.Principal | None:
            with session_scope(services.settings.resolved_database_url) as session:
                return auth.authenticate(session, token)

        principal = await run_in_threadpool(lookup)
        if principal is None:
            raise HTTPException(401, "invalid or revoked API key", headers={
                "WWW-Authenticate": 'Bearer realm="ganforge", error="invalid_token"'})
        services.key_cache.put(token, principal)
    return principal


PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]


async def limit_sampling(services: ServicesDep, principal: PrincipalDep) -> None:
    services.sample_limiter.hit(principal.key_id or principal.owner_id)
