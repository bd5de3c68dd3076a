"""/v1/jobs: create, list, read, cancel, resume, delete, and stream progress."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import PrincipalDep, ServicesDep, SessionDep, require_writable_store
from app.api.errors import problem_responses
from app.api.schemas import CheckpointPublic, JobCreate, JobPublic, JobResume, JobsPublic
from app.core.jobs import fleet
from app.core.jobs import records as jobs
from app.core.jobs.events import Event, JobEvents
from app.core.models import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401, 422, 503))
_ONE = problem_responses(404)
_EVENT = {  # one server-sent event, as OpenAPI 3.2's itemSchema (what FastAPI emits for SSE routes)
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": ["job", "checkpoint", "deleted"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
_STATE = problem_responses(404, 409)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    dependencies=[Depends(require_writable_store)],
    responses=problem_responses(
        400,
        409,
        429,
        described={
            409: "the Idempotency-Key was used for a different request, or the storage quota is full",
            429: "the owner's queued + running job limit; see Retry-After",
        },
    ),
)
def create_job(
    body: JobCreate,
    session: SessionDep,
    services: ServicesDep,
    response: Response,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    """Queue a training job; 202 with its Location. A repeated Idempotency-Key returns the same job."""
    job = jobs.submit_job(
        session,
        services.settings,
        services.queue,
        principal=principal,
        name=body.name,
        config=body.config,
        idempotency_key=idempotency_key,
        webhook_url=body.webhook_url,
        webhook_events=list(body.webhook_events) if body.webhook_events is not None else None,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job, fleet.live_devices(session, services.settings))


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    services: ServicesDep,
    principal: PrincipalDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobsPublic:
    """Jobs, newest first; pass next_cursor back as cursor for the next page."""
    page = jobs.list_jobs(
        session, owner_id=principal.scope, status=status_, limit=limit, cursor=cursor
    )
    live = fleet.live_devices(session, services.settings)
    return JobsPublic(
        items=[JobPublic.of(j, live) for j in page.items], next_cursor=page.next_cursor
    )


@router.get("/{job_id}", response_model=JobPublic, responses=_ONE)
def get_job(
    job_id: str, session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> JobPublic:
    job = jobs.get_job(session, job_id=job_id, owner_id=principal.scope)
    return JobPublic.of(job, fleet.live_devices(session, services.settings))


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=_STATE,
)
def cancel_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> JobPublic:
    """Stop a job: a queued one at once, a running one at its next check (it keeps a checkpoint)."""
    return JobPublic.of(jobs.request_cancel(session, job_id=job_id, owner_id=principal.scope))


@router.post(
    "/{job_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    dependencies=[Depends(require_writable_store)],
    responses=problem_responses(400, 404, 409, 429),
)
def resume_job(
    job_id: str,
    session: SessionDep,
    services: ServicesDep,
    response: Response,
    principal: PrincipalDep,
    body: JobResume | None = None,
) -> JobPublic:
    """Continue a failed or canceled job from its last checkpoint, optionally to more steps;
    or train a succeeded job longer: ``steps`` above its total (409 without ``steps``)."""
    job = jobs.submit_resume(
        session,
        services.settings,
        services.queue,
        job_id=job_id,
        principal=principal,
        steps=body.steps if body else None,
        devices=body.devices if body else None,
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job, fleet.live_devices(session, services.settings))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_STATE)
def delete_job(
    job_id: str, session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """Delete a job that is not running, with its checkpoints."""
    jobs.delete_job(session, services.store, job_id=job_id, owner_id=principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _sse(event: Event, job_id: str) -> str:
    """One event in the text/event-stream format."""
    if event.kind == "keepalive":
        return ": keep-alive\n\n"
    if event.kind == "deleted":
        return f"event: deleted\ndata: {json.dumps({'id': job_id})}\n\n"
    if event.kind == "checkpoint":
        assert event.checkpoint is not None
        kind = event.job.config.get("kind", "noise") if event.job is not None else "noise"
        data = CheckpointPublic.of(event.checkpoint, event.best_id, kind).model_dump_json()
    else:
        assert event.job is not None
        data = JobPublic.of(event.job, event.live_devices).model_dump_json()
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events, each with an `id`: `event: job` with the job's "
            "JSON whenever it changes, until it finishes; `event: checkpoint` with a "
            "checkpoint's JSON (and scores) once it is final; `event: deleted` if the job is "
            "deleted meanwhile; `: keep-alive` comments while idle. A `job` event is the job "
            "as the stream reads it: states superseded in between are not sent. Reconnect "
            "with `Last-Event-ID: N` to get every checkpoint finalised since event N, then "
            "the job's current state if it changed (not the states in between).",
            "content": {"text/event-stream": {"itemSchema": _EVENT}},
        },
        **_ONE,
    },
)
async def job_events(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    # str, not int | None: a header cannot be null (and SSE ids are strings)
    last_event_id: Annotated[
        str, Header(pattern=r"^[0-9]{0,18}$", description="the id of the last event received")
    ] = "",
) -> StreamingResponse:
    """Server-sent events of a job, resumable with Last-Event-ID."""
    events = JobEvents(
        services.settings,
        job_id=job_id,
        owner_id=principal.scope,
        last_event_id=int(last_event_id) if last_event_id else None,
    )
    first = await events.first()  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        async for event in events.stream(first):
            yield _sse(event, job_id)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
