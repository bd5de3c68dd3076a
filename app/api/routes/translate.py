"""/v1/jobs/{id}/checkpoints/{ckpt}: translate an image, and a grid of held-out translations."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from app.api.deps import PrincipalDep, ServicesDep, limit_sampling
from app.api.errors import problem, problem_responses
from app.api.routes.checkpoints import IMMUTABLE, EmaQuery
from app.core.serving.image_input import FIELD, MAX_IMAGE_BYTES, read_body
from app.core.serving.sampling import EmaChoice, Png
from app.core.serving.translating import MAX_GRID_EXAMPLES, NOT_A_TRANSLATOR

router = APIRouter(
    prefix="/v1/jobs/{job_id}/checkpoints",
    tags=["checkpoints"],
    responses=problem_responses(401, 404, 422, 503),
)
_CONFLICT = (
    f"the checkpoint holds a noise-to-image generator ({NOT_A_TRANSLATOR}), its files or its "
    "job's dataset are gone"
)
_IMAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "a PNG image",
    },
    **problem_responses(409, 429, described={409: _CONFLICT, 429: "the per-key sampling rate"}),
}
_PNG = {**_IMAGE, 304: {"description": "If-None-Match named this image's ETag"}}
_ALREADY_HAVE = (
    "If-None-Match named this translation's ETag: the client already has it (RFC 9110 13.1.2: "
    "a failed condition on a POST is a 412, not a 304); the ETag header is on the answer"
)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image (PNG, JPEG, BMP, WebP or GIF; at most "
        f"{MAX_IMAGE_BYTES >> 20} MiB and 4096x4096 pixels, or the lower upload caps): the raw "
        f"body (`--data-binary @x.png -H 'Content-Type: image/png'`), or the multipart form "
        f"field `{FIELD}` (`-F {FIELD}=@x.png`).",
        "content": {
            "image/png": _BINARY,
            "image/jpeg": _BINARY,
            "application/octet-stream": _BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
Direction = Literal["a2b", "b2a"]
DirectionQuery = Annotated[
    Direction, Query(description="a2b (A → B), or b2a (B → A; unpaired models only)")
]


def png_response(png: Png, *, safe: bool = True) -> Response:
    """As samples.png's: the ETag, whether it may be cached for good, and the checkpoint.
    An If-None-Match that named the ETag: 304 for a GET; for a POST (not ``safe``) the
    condition failed, a 412 (RFC 9110 13.1.2) with the ETag and checkpoint headers."""
    headers = {
        "ETag": png.etag,
        "Cache-Control": IMMUTABLE if png.immutable else "no-cache",
        "X-Checkpoint-Id": png.checkpoint_id,
        "X-Checkpoint-Step": str(png.step),
    }
    if png.body is None and safe:
        return Response(status_code=304, headers=headers)
    if png.body is None:
        detail = (
            f"If-None-Match names {png.etag}, this translation's ETag: the client already has "
            "it (send the request without If-None-Match to get it again)"
        )
        headers["Cache-Control"] = "no-store"  # an answer to this request, not the image's
        return problem(412, "Precondition failed", detail, field="If-None-Match", headers=headers)
    return Response(png.body, media_type="image/png", headers=headers)


@router.post(
    "/{ckpt}/translate",
    response_class=Response,
    responses={
        **_IMAGE,
        **problem_responses(
            408,
            412,
            413,
            415,
            described={
                408: "the body was idle too long",
                412: _ALREADY_HAVE,
                413: "the image is over the byte or pixel cap",
                415: "the body is not an image nor a multipart form",
            },
        ),
    },
    openapi_extra=_IMAGE_BODY,
    dependencies=[Depends(limit_sampling)],
)
async def translate_image(
    request: Request,
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    direction: DirectionQuery = "a2b",
    ema: EmaQuery = EmaChoice.auto,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The image translated by a paired or unpaired checkpoint: a PNG at the model's
    image_size (the input centre-cropped to a square and resized, as training images were).
    The same image always gives the same bytes: an If-None-Match naming its ETag is a 412
    (the client has it already; RFC 9110 13.1.2), not a 304, as this is a POST."""

    def read_image() -> Awaitable[bytes]:
        return read_body(
            request.stream(),
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
            limits=services.translations.limits,
            idle_seconds=services.settings.upload_idle_timeout_seconds,
        )

    return png_response(
        await services.translations.translate(
            job_id=job_id,
            ref=ckpt,
            read_image=read_image,
            direction=direction,
            ema=ema,
            principal=principal,
            if_none_match=if_none_match,
        ),
        safe=False,
    )


@router.get(
    "/{ckpt}/translations.png",
    response_class=Response,
    responses=_PNG,
    dependencies=[Depends(limit_sampling)],
)
async def translations_png(
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    n: Annotated[
        int, Query(ge=1, le=MAX_GRID_EXAMPLES, description="held-out examples (grid rows)")
    ] = 8,
    direction: DirectionQuery = "a2b",
    ema: EmaQuery = EmaChoice.auto,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The first n held-out validation examples of the job's dataset (name order), a row
    each: input | translation | target (pairs only). The same URL gives the same bytes."""
    return png_response(
        await services.translations.translations_png(
            job_id=job_id,
            ref=ckpt,
            n=n,
            direction=direction,
            ema=ema,
            principal=principal,
            if_none_match=if_none_match,
        )
    )
