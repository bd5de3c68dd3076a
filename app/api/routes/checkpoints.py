"""/v1/jobs/{id}/checkpoints: list, read, download, and PNG samples from any of them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import FileResponse

from app.api.deps import PrincipalDep, ServicesDep, SessionDep, limit_sampling
from app.api.errors import problem_responses
from app.api.schemas import CheckpointPublic, CheckpointsPublic
from app.core.artifacts import checkpoints
from app.core.serving.sampling import EmaChoice, Png, SampleRequest

router = APIRouter(
    prefix="/v1/jobs/{job_id}/checkpoints",
    tags=["checkpoints"],
    responses=problem_responses(401, 404, 422, 503),
)
_FILES_GONE = "the checkpoint's files are missing from the store"
PNG: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "a PNG image",
    },
    304: {"description": "If-None-Match named this image's ETag"},
    **problem_responses(
        409, 429, described={409: _FILES_GONE, 429: "the per-key sampling rate; see Retry-After"}
    ),
}
IMMUTABLE = "public, max-age=31536000, immutable"
EmaQuery = Annotated[
    EmaChoice,
    Query(
        description=(
            "which generator: the averaged one (true), the raw one (false), or whichever scored the "
            "lower FD on this checkpoint (auto; the averaged one while unscored)"
        )
    ),
]


@router.get("", response_model=CheckpointsPublic)
def list_checkpoints(
    job_id: str, session: SessionDep, principal: PrincipalDep
) -> CheckpointsPublic:
    """A job's stored checkpoints, newest first, with their scores."""
    items = checkpoints.list_checkpoints(session, job_id=job_id, owner_id=principal.scope)
    return CheckpointsPublic(
        items=[
            CheckpointPublic.of(c, c.job.best_checkpoint_id, c.job.config.get("kind", "noise"))
            for c in items
        ]
    )


@router.get("/{ckpt}", response_model=CheckpointPublic)
def get_checkpoint(
    job_id: str, ckpt: str, session: SessionDep, principal: PrincipalDep
) -> CheckpointPublic:
    """One checkpoint (an id, 'latest' or 'best'): step, size, file hashes, scores."""
    row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ckpt, owner_id=principal.scope)
    return CheckpointPublic.of(row, row.job.best_checkpoint_id, row.job.config.get("kind", "noise"))


@router.get(
    "/{ckpt}/download",
    response_class=Response,
    responses={
        200: {
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            "description": "a zip of the checkpoint's files",
        },
        **problem_responses(409, described={409: _FILES_GONE}),
    },
)
def download_checkpoint(
    job_id: str, ckpt: str, session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """The checkpoint's files (safetensors weights + meta.json) as a zip."""
    row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ckpt, owner_id=principal.scope)
    data = checkpoints.checkpoint_zip(services.store, row)
    filename = f"{job_id}-step{row.step}.zip"
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _png_response(png: Png) -> Response:
    headers = {
        "ETag": png.etag,
        "Cache-Control": IMMUTABLE if png.immutable else "no-cache",
        "X-Checkpoint-Id": png.checkpoint_id,
        "X-Checkpoint-Step": str(png.step),
    }
    if png.body is None:
        return Response(status_code=304, headers=headers)
    return Response(png.body, media_type="image/png", headers=headers)


@router.get(
    "/{ckpt}/samples.png",
    response_class=Response,
    responses=PNG,
    dependencies=[Depends(limit_sampling)],
)
async def samples_png(
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    n: Annotated[int, Query(ge=1, le=256, description="number of images")] = 64,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    nrow: Annotated[int, Query(ge=1, le=64, description="images per grid row")] = 8,
    label: Annotated[
        int | None, Query(ge=0, le=999, description="class (conditional models)")
    ] = None,
    ema: EmaQuery = EmaChoice.auto,
    truncation: Annotated[float | None, Query(gt=0, le=10)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A PNG grid of n samples; the same URL always returns the same bytes."""
    req = SampleRequest(
        "samples", n=n, seed=seed, nrow=nrow, label=label, ema=ema, truncation=truncation
    )
    return _png_response(
        await services.sampling.png(
            job_id=job_id, ref=ckpt, req=req, principal=principal, if_none_match=if_none_match
        )
    )


@router.get(
    "/{ckpt}/interpolation.png",
    response_class=Response,
    responses=PNG,
    dependencies=[Depends(limit_sampling)],
)
async def interpolation_png(
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    from_seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    to_seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 1,
    steps: Annotated[int, Query(ge=2, le=64, description="images along the walk")] = 8,
    nrow: Annotated[int | None, Query(ge=1, le=64)] = None,
    label: Annotated[int | None, Query(ge=0, le=999)] = None,
    ema: EmaQuery = EmaChoice.auto,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A latent walk from one seed's image to another's, as one PNG row (or grid)."""
    req = SampleRequest(
        "interpolation",
        nrow=nrow or steps,
        label=label,
        ema=ema,
        from_seed=from_seed,
        to_seed=to_seed,
        steps=steps,
    )
    return _png_response(
        await services.sampling.png(
            job_id=job_id, ref=ckpt, req=req, principal=principal, if_none_match=if_none_match
        )
    )


_EXPORT: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the generator file",
    },
    304: {"description": "If-None-Match named this file's ETag"},
    **problem_responses(409, 429, described={409: _FILES_GONE, 429: "the per-key sampling rate"}),
}
ExportDirection = Annotated[
    Literal["a2b", "b2a"] | None,
    Query(
        description=(
            "a translation model's direction to export: a2b (A → B, the default), or b2a "
            "(B → A; unpaired models only). A noise-to-image generator has none: leave it out"
        )
    ),
]


async def _export(
    services: ServicesDep,
    principal: PrincipalDep,
    job_id: str,
    ckpt: str,
    kind: str,
    ema: EmaChoice,
    direction: str | None,
    if_none_match: str | None,
) -> Response:
    made = await services.exports.get(
        job_id=job_id, ref=ckpt, kind=kind, ema=ema, principal=principal, direction=direction
    )
    headers = {
        "ETag": made.etag,
        "Cache-Control": IMMUTABLE if made.immutable else "no-cache",
        "Content-Disposition": f'attachment; filename="{made.filename}"',
    }
    if if_none_match and made.etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return FileResponse(made.path, media_type=made.media_type, headers=headers)


@router.get(
    "/{ckpt}/generator.onnx",
    response_class=Response,
    responses=_EXPORT,
    dependencies=[Depends(limit_sampling)],
)
async def generator_onnx(
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    ema: EmaQuery = EmaChoice.auto,
    direction: ExportDirection = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The generator as ONNX (opset 18; inputs z and, if conditional, labels; dynamic batch;
    output images in [-1, 1]): runs in onnxruntime with no torch and no ganforge. A translation
    model's translator for one direction: input images float32 (batch, C_in, S, S) in [-1, 1]
    → output translated (batch, C_out, S, S) in [-1, 1]."""
    return await _export(services, principal, job_id, ckpt, "onnx", ema, direction, if_none_match)


@router.get(
    "/{ckpt}/generator.pt",
    response_class=Response,
    responses=_EXPORT,
    dependencies=[Depends(limit_sampling)],
)
async def generator_torchscript(
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    ema: EmaQuery = EmaChoice.auto,
    direction: ExportDirection = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The generator as TorchScript: torch.jit.load(path)(z) (or (z, labels)); a translation
    model's translator for one direction: torch.jit.load(path)(images)."""
    return await _export(
        services, principal, job_id, ckpt, "torchscript", ema, direction, if_none_match
    )
