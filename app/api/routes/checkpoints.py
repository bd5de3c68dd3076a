"""/v1/jobs/{id}/checkpoints: list, read, download, and PNG samples from any of them."""

from __future__ import annotations

import io
import zipfile
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import PrincipalDep, ServicesDep, SessionDep, limit_sampling
from app.api.errors import problem_responses
from app.api.schemas import CheckpointPublic, CheckpointsPublic
from app.core import checkpoints
from app.core.db import session_scope
from app.core.errors import InvalidInput
from app.core.models import Checkpoint
from app.core.sampling import SampleRequest
from gan_core.checkpoint import CheckpointError

router = APIRouter(prefix="/v1/jobs/{job_id}/checkpoints", tags=["checkpoints"],
                   responses=problem_responses(401, 404, 422, 503))
_FILES_GONE = "the checkpoint's files are missing from the store"
PNG = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
          "description": "a PNG image"},
    304: {"description": "If-None-Match named this image's ETag"},
    **problem_responses(409, 429, described={
        409: _FILES_GONE, 429: "the per-key sampling rate; see Retry-After"}),
}
IMMUTABLE = "public, max-age=31536000, immutable"


@router.get("", response_model=CheckpointsPublic)
def list_checkpoints(job_id: str, session: SessionDep, principal: PrincipalDep) -> CheckpointsPublic:
    """A job's checkpoints, newest first."""
    items = checkpoints.list_checkpoints(session, job_id=job_id, owner_id=principal.scope)
    return CheckpointsPublic(items=[CheckpointPublic.of(c) for c in items])


@router.get("/{ckpt}", response_model=CheckpointPublic)
def get_checkpoint(job_id: str, ckpt: str, session: SessionDep,
                   principal: PrincipalDep) -> CheckpointPublic:
    """One checkpoint (an id, or 'latest'): step, size, file hashes."""
    return CheckpointPublic.of(
        checkpoints.get_checkpoint(session, job_id=job_id, ref=ckpt, owner_id=principal.scope)
    )


@router.get("/{ckpt}/download", response_class=Response, responses={
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
          "description": "a zip of the checkpoint's files"},
    **problem_responses(409, described={409: _FILES_GONE}),
})
def download_checkpoint(job_id: str, ckpt: str, session: SessionDep, services: ServicesDep,
                        principal: PrincipalDep) -> Response:
    """The checkpoint's files (safetensors weights + meta.json) as a zip."""
    row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ckpt, owner_id=principal.scope)
    path = checkpoints.checkpoint_path(services.store, row)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # weights do not compress
        for name in sorted(row.files) + ["meta.json"]:
            zf.write(path / name, arcname=f"{job_id}-step{row.step}/{name}")
    filename = f"{job_id}-step{row.step}.zip"
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def _png(services, row: Checkpoint, ref: str, req: SampleRequest,
               if_none_match: str | None) -> Response:
    etag = services.sampler.etag(checkpoints.content_hash(row), req)
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE if ref != "latest" else "no-cache",
               "X-Checkpoint-Id": row.id, "X-Checkpoint-Step": str(row.step)}
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    cached = services.sampler.pngs.get(etag)  # a repeat: no thread hop, no disk access
    if cached is not None:
        return Response(cached, media_type="image/png", headers=headers)
    path = checkpoints.checkpoint_path(services.store, row)
    try:
        # torch inference and PNG encoding block; keep them off the event loop
        data = await run_in_threadpool(services.sampler.render, path, req, etag)
    except CheckpointError as exc:
        raise InvalidInput(f"checkpoint {row.id} cannot be loaded: {exc}") from exc
    except ValueError as exc:  # e.g. a label outside the model's classes
        raise InvalidInput(str(exc), field="label") from exc
    return Response(data, media_type="image/png", headers=headers)


def _resolve(url: str, job_id: str, ckpt: str, owner_id: str | None) -> tuple[Checkpoint, int | None]:
    # One session in one thread hop: the sampling hot path stays short.
    with session_scope(url) as session:
        row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ckpt, owner_id=owner_id)
        classes = (row.job.config or {}).get("num_classes")
        session.expunge(row)  # used after the session closes
    return row, classes


async def _checkpoint_for(services, job_id: str, ckpt: str, label: int | None,
                          owner_id: str | None) -> Checkpoint:
    # A fixed checkpoint id names immutable weights: remember its row briefly. 'latest' moves
    # whenever the worker writes a checkpoint, so it is always looked up.
    key = (job_id, ckpt, owner_id)
    hit = services.checkpoint_refs.get(key) if ckpt != "latest" else None
    if hit is None:
        hit = await run_in_threadpool(_resolve, services.settings.resolved_database_url,
                                      job_id, ckpt, owner_id)
        if ckpt != "latest":
            services.checkpoint_refs.put(key, hit)
    row, classes = hit
    # Unconditional models ignore labels; for conditional ones the bound is the model's.
    if label is not None and classes is not None and label >= classes:
        raise InvalidInput(f"label must be < {classes} (the model's classes)", field="label")
    return row


@router.get("/{ckpt}/samples.png", response_class=Response, responses=PNG,
            dependencies=[Depends(limit_sampling)])
async def samples_png(
    job_id: str,
    ckpt: str,
    services: ServicesDep,
    principal: PrincipalDep,
    n: Annotated[int, Query(ge=1, le=256, description="number of images")] = 64,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    nrow: Annotated[int, Query(ge=1, le=64, description="images per grid row")] = 8,
    label: Annotated[int | None, Query(ge=0, le=999, description="class (conditional models)")] = None,
    ema: bool = True,
    truncation: Annotated[float | None, Query(gt=0, le=10)] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A PNG grid of n samples; the same URL always returns the same bytes."""
    if n > services.settings.max_samples:
        raise InvalidInput(f"n must be <= {services.settings.max_samples}", field="n")
    row = await _checkpoint_for(services, job_id, ckpt, label, principal.scope)
    req = SampleRequest("samples", n=n, seed=seed, nrow=nrow, label=label, ema=ema, truncation=truncation)
    return await _png(services, row, ckpt, req, if_none_match)


@router.get("/{ckpt}/interpolation.png", response_class=Response, responses=PNG,
            dependencies=[Depends(limit_sampling)])
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
    ema: bool = True,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A latent walk from one seed's image to another's, as one PNG row (or grid)."""
    if steps > services.settings.max_interpolation_steps:
        raise InvalidInput(f"steps must be <= {services.settings.max_interpolation_steps}", field="steps")
    row = await _checkpoint_for(services, job_id, ckpt, label, principal.scope)
    req = SampleRequest("interpolation", nrow=nrow or steps, label=label, ema=ema,
                        from_seed=from_seed, to_seed=to_seed, steps=steps)
    return await _png(services, row, ckpt, req, if_none_match)
