"""/v1/translations: a folder of images (a zip) translated by a checkpoint on the worker; its
progress, cancel, result.zip and delete. Created under the checkpoint that translates it."""

from __future__ import annotations

import asyncio
import shutil
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from app.api.deps import PrincipalDep, ServicesDep, SessionDep, require_writable_store
from app.api.errors import problem_responses
from app.api.routes.checkpoints import EmaQuery
from app.api.routes.translate import DirectionQuery
from app.api.translation_schemas import TranslationPublic, TranslationsPublic
from app.core.datasets.upload_receiver import receive
from app.core.db import session_scope
from app.core.errors import Conflict
from app.core.models import JobStatus
from app.core.serving import folder_submit as submit
from app.core.serving import folder_translations as records
from app.core.serving.folder_inputs import ACCEPTED
from app.core.serving.sampling import EmaChoice

router = APIRouter(tags=["translations"], responses=problem_responses(401, 422, 503))
_ONE = problem_responses(404)
_STATE = problem_responses(404, 409)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ZIP_BODY = {
    "requestBody": {
        "required": True,
        "description": f"Send {ACCEPTED} (`curl -F file=@photos.zip`, or `--data-binary "
        "@photos.zip -H 'Content-Type: application/zip'`). The dataset upload limits apply: "
        "bytes, entries, unpacked bytes, expansion ratio and the pixels of all images.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/zip": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


@router.post(
    "/v1/jobs/{job_id}/checkpoints/{ckpt}/translations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TranslationPublic,
    dependencies=[Depends(require_writable_store)],
    openapi_extra=_ZIP_BODY,
    responses=problem_responses(
        404,
        408,
        409,
        413,
        415,
        429,
        described={
            408: "the body was idle or too slow",
            409: "the checkpoint holds a noise-to-image generator, or was pruned meanwhile; "
            "the Idempotency-Key was used for a different request; the storage quota is full",
            413: "over the upload byte or pixel limit, or the inputs would pass the storage quota",
            415: "not a zip",
            429: "the owner's queued + running translations limit; see Retry-After",
        },
    ),
)
async def create_translation(
    request: Request,
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    response: Response,
    direction: DirectionQuery = "a2b",
    ema: EmaQuery = EmaChoice.auto,
    filename: Annotated[
        str | None, Query(max_length=255, description="the zip's name, for a raw body")
    ] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TranslationPublic:
    """Translate every image of a zip with this checkpoint, on the worker: 202 with the
    translation and its Location; poll it, then fetch result.zip (a PNG per image, the
    folders kept, and report.json naming any image that could not be translated). A ref
    (latest, best) is resolved now: the translation always uses that checkpoint. A repeated
    Idempotency-Key with the same job, ref, direction, ema and zip returns the same
    translation."""
    settings = services.settings
    asked = submit.Asked(job_id=job_id, ref=ckpt, direction=direction, ema=ema)

    def admit() -> submit.Target | None:
        with session_scope(settings.resolved_database_url) as session:
            return submit.admit(
                session,
                settings,
                asked=asked,
                principal=principal,
                idempotency_key=idempotency_key,
            )

    target = await run_in_threadpool(admit)  # 404/409/429 before the body is read
    services.uploads.admit()
    try:
        upload = await receive(
            request.stream(),
            services.store,
            settings,
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
            filename=filename,
        )

        def create() -> TranslationPublic:
            with session_scope(settings.resolved_database_url) as session:
                row = submit.create(
                    session,
                    settings,
                    services.store,
                    services.queue,
                    asked=asked,
                    target=target,
                    upload=upload,
                    principal=principal,
                    idempotency_key=idempotency_key,
                )
                return TranslationPublic.of(row)

        try:
            made = await services.uploads.run(create)
        finally:
            await asyncio.to_thread(shutil.rmtree, upload.scratch, True)
    finally:
        services.uploads.leave()
    response.headers["Location"] = made.links["self"]
    return made


@router.get("/v1/translations", response_model=TranslationsPublic)
def list_translations(
    session: SessionDep,
    principal: PrincipalDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    job_id: Annotated[
        str | None, Query(max_length=40, description="only the translations of this job")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TranslationsPublic:
    """Folder translations, newest first; pass next_cursor back as cursor for the next page."""
    page = records.list_translations(
        session,
        owner_id=principal.scope,
        status=status_,
        job_id=job_id,
        limit=limit,
        cursor=cursor,
    )
    return TranslationsPublic(
        items=[TranslationPublic.of(t) for t in page.items], next_cursor=page.next_cursor
    )


@router.get("/v1/translations/{translation_id}", response_model=TranslationPublic, responses=_ONE)
def get_translation(
    translation_id: str, session: SessionDep, principal: PrincipalDep
) -> TranslationPublic:
    return TranslationPublic.of(
        records.get(session, translation_id=translation_id, owner_id=principal.scope)
    )


@router.post(
    "/v1/translations/{translation_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TranslationPublic,
    responses=_STATE,
)
def cancel_translation(
    translation_id: str, session: SessionDep, principal: PrincipalDep
) -> TranslationPublic:
    """Stop a translation: a queued one at once, a running one after its current batch (its
    partial result is dropped)."""
    return TranslationPublic.of(
        records.request_cancel(session, translation_id=translation_id, owner_id=principal.scope)
    )


@router.get(
    "/v1/translations/{translation_id}/result.zip",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": _BINARY}, "description": "the translated PNGs"},
        **problem_responses(404, 409, described={409: "the translation has not succeeded"}),
    },
)
def translation_result(
    translation_id: str, session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> FileResponse:
    """The translated images: ``name.png`` for each input ``name.*``, in the archive's
    folders, and ``report.json`` ({translated, failed: [{name, error}], skipped})."""
    row = records.get(session, translation_id=translation_id, owner_id=principal.scope)
    if row.status != JobStatus.succeeded:
        raise Conflict(f"translation {translation_id} is {row.status}; no result to fetch")
    path = services.store.local_path(records.result_key(row.id)) / records.RESULT_FILE
    if not path.is_file():
        raise Conflict(f"translation {translation_id}'s result is missing from the store")
    stem = (row.filename or row.id).rsplit(".", 1)[0] or row.id
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"{stem}-translated.zip",
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


@router.delete(
    "/v1/translations/{translation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 409, described={409: "it is running; cancel it first"}),
)
def delete_translation(
    translation_id: str, session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """Delete a translation that is not running, with its input images and result."""
    records.delete(session, services.store, translation_id=translation_id, owner_id=principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
