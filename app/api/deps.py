"""Dependencies shared by routes: settings, database session, store, sampler, queue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.access import auth
from app.core.artifacts.store import LocalStore
from app.core.datasets.uploads import UploadGate
from app.core.db import session_scope
from app.core.errors import InvalidInput
from app.core.health import StoreGate
from app.core.integrations.telemetry import Exposition
from app.core.jobs.queue import JobQueue
from app.core.serving.cache import TTLCache
from app.core.serving.exports import Exports
from app.core.serving.job_pictures import JobPictures
from app.core.serving.sampling import SamplingService
from app.core.serving.translating import Translations
from app.core.settings import Settings

log = logging.getLogger("ganforge.api")


@dataclass
class Services:
    """What one API process holds for its lifetime (built once in create_app)."""

    settings: Settings
    store: LocalStore
    sampling: SamplingService
    pictures: JobPictures
    exports: Exports
    exposition: Exposition
    queue: JobQueue
    celery: Any  # the Celery app the queue sends through (only sends; never consumes)
    uploads: UploadGate
    local_worker: Callable[[], bool] | None = None  # embedded serve's worker child: alive?
    # Verified keys, so hot paths skip the database: a revoked key stops working within 5 s.
    key_cache: TTLCache[auth.Principal] = field(default_factory=lambda: TTLCache(ttl=5.0))
    # New work only while the store can be written (probed at most every few seconds).
    store_gate: StoreGate = field(init=False)
    # Translating images: on the sampling machinery (its caches, slots and limits).
    translations: Translations = field(init=False)

    def __post_init__(self) -> None:
        self.store_gate = StoreGate(self.store, self.settings.store_url or "the local store")
        self.translations = Translations(self.sampling)

    def broker_ping(self) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


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
        raise HTTPException(
            401,
            "an API key is required: Authorization: Bearer KEY",
            headers={"WWW-Authenticate": 'Bearer realm="ganforge"'},
        )
    token = credentials.credentials
    principal = services.key_cache.get(token)
    if principal is None:

        def lookup() -> auth.Principal | None:
            with session_scope(services.settings.resolved_database_url) as session:
                return auth.authenticate(session, token)

        principal = await run_in_threadpool(lookup)
        if principal is None:
            raise HTTPException(
                401,
                "invalid or revoked API key",
                headers={"WWW-Authenticate": 'Bearer realm="ganforge", error="invalid_token"'},
            )
        services.key_cache.put(token, principal)
    return principal


PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]


async def require_writable_store(services: ServicesDep, _principal: PrincipalDep) -> None:
    """New work (a job, a resume, an upload) only while the artifact store can be written:
    503 + Retry-After naming the store otherwise (after authentication: 401 comes first)."""
    await run_in_threadpool(services.store_gate.require)


async def limit_sampling(services: ServicesDep, principal: PrincipalDep) -> None:
    await services.sampling.limits.request(principal.key_id or principal.owner_id)


def _declared_query(route: Any) -> frozenset[str]:
    """The query parameter names a route (and its dependencies) declares."""
    names: set[str] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        names.update(f.alias for f in dependant.query_params)
        stack.extend(dependant.dependencies)
    return frozenset(names)


_query_names: dict[int, frozenset[str]] = {}


async def check_parameters(request: Request) -> None:
    """Refuse what would otherwise be silently ignored or reach the database as garbage.

    - a NUL byte in a path or query parameter: Postgres cannot store or compare it (a 500
      before); no id, name or cursor of ours contains one;
    - a query parameter the route does not take: ``?seeds=3`` would silently serve seed 0.
    """
    for where in (request.path_params, request.query_params):
        for name, value in where.items():
            if "\x00" in value or "\x00" in name:
                raise InvalidInput(
                    f"{name}: NUL bytes are not allowed", field=name.replace("\x00", "")
                )
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = _query_names.get(id(route))
    if known is None:
        known = _query_names[id(route)] = _declared_query(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidInput(
            f"{unknown[0]}: unknown query parameter (this endpoint takes: {allowed})",
            field=unknown[0],
        )
