"""/v1/jobs/{id}/metrics, losses.png, timeline.png and timeline.gif: how a run went."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from app.api.deps import PrincipalDep, ServicesDep, SessionDep, limit_sampling
from app.api.errors import problem_responses
from app.api.schemas import MetricsPublic, TranslatorScores
from app.core.serving import history
from app.core.serving.job_pictures import Picture
from app.core.serving.pictures import CHART_HEIGHT, CHART_WIDTH, FRAME_MS, MAX_TIMELINE_IMAGES
from app.core.serving.sampling import EmaChoice

router = APIRouter(
    prefix="/v1/jobs/{job_id}", tags=["history"], responses=problem_responses(401, 404, 422, 503)
)
_CSV_COLUMNS = [
    "kind",
    "step",
    "time",
    "d_loss",
    "g_loss",
    "images_per_sec",
    "augment_p",
    "checkpoint_id",
    "stored",
    "best",
    "score_status",
    "fd",
    "fd_ema",
    "fd_raw",
    "kid_ema",
    "kid_raw",
    "precision_ema",
    "recall_ema",
    "precision_raw",
    "recall_raw",
    "preferred",
    "l1",
    "psnr",
    "ssim",
    "fd_b2a",
]


def _image(media: str) -> dict[int | str, dict]:
    return {
        200: {
            "content": {media: {"schema": {"type": "string", "format": "binary"}}},
            "description": "the picture",
        },
        304: {"description": "If-None-Match named this picture's ETag"},
        **problem_responses(
            409, 429, described={409: "no checkpoint to show yet", 429: "the key's sampling budget"}
        ),
    }


def _csv(metrics: MetricsPublic) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in metrics.train:
        writer.writerow(
            {
                "kind": "train",
                "step": p.step,
                "time": p.time.isoformat(),
                "d_loss": p.d_loss,
                "g_loss": p.g_loss,
                "images_per_sec": p.images_per_sec,
                "augment_p": p.augment_p,
            }
        )
    for c in metrics.checkpoints:
        row: dict[str, object] = {
            "kind": "checkpoint",
            "step": c.step,
            "time": c.created_at.isoformat(),
            "checkpoint_id": c.id,
            "stored": c.stored,
            "best": c.best,
            "score_status": c.score_status,
        }
        if c.scores is not None:
            row.update(fd=c.scores.fd, preferred=c.scores.preferred)
            if c.scores.kind is not None:  # a translator's (the preferred one's at the top)
                row.update(
                    l1=c.scores.l1, psnr=c.scores.psnr, ssim=c.scores.ssim, fd_b2a=c.scores.fd_b2a
                )
            for name in ("ema", "raw"):
                s = getattr(c.scores, name)
                if isinstance(s, TranslatorScores):
                    row.update({f"fd_{name}": s.fd, f"kid_{name}": s.kid})
                elif s is not None:
                    row.update(
                        {
                            f"fd_{name}": s.fd,
                            f"kid_{name}": s.kid_mean,
                            f"precision_{name}": s.precision,
                            f"recall_{name}": s.recall,
                        }
                    )
        writer.writerow(row)
    return out.getvalue()


@router.get(
    "/metrics",
    response_model=MetricsPublic,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "JSON, or CSV (one row per loss bucket and per checkpoint) with "
            "`Accept: text/csv`",
        }
    },
)
def job_metrics(
    job_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The run's loss history (bounded, oldest first) and every checkpoint with its scores."""
    metrics = MetricsPublic.of(
        history.job_history(session, job_id=job_id, owner_id=principal.scope)
    )
    if accept and "text/csv" in accept:
        return Response(
            _csv(metrics),
            media_type="text/csv",
            headers={"Content-Disposition": f'inline; filename="{job_id}-metrics.csv"'},
        )
    return Response(metrics.model_dump_json(), media_type="application/json")


def _picture(picture: Picture) -> Response:
    headers = {"ETag": picture.etag, "Cache-Control": "no-cache"}  # the run moves on
    if picture.body is None:
        return Response(status_code=304, headers=headers)
    return Response(picture.body, media_type=picture.media_type, headers=headers)


@router.get(
    "/losses.png",
    response_class=Response,
    responses=_image("image/png"),
    dependencies=[Depends(limit_sampling)],
)
async def losses_png(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    width: Annotated[int, Query(ge=CHART_WIDTH[0], le=CHART_WIDTH[1])] = 800,
    height: Annotated[int, Query(ge=CHART_HEIGHT[0], le=CHART_HEIGHT[1])] = 400,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """D and G losses over steps, with the FD of each checkpoint on a second axis."""
    return _picture(
        await services.pictures.losses(
            job_id=job_id,
            principal=principal,
            width=width,
            height=height,
            if_none_match=if_none_match,
        )
    )


_TIMELINE = {
    "n": Query(ge=1, le=MAX_TIMELINE_IMAGES, description="images per checkpoint"),
    "rows": Query(ge=1, le=64, description="checkpoints shown, spread over the run"),
}


@router.get(
    "/timeline.png",
    response_class=Response,
    responses=_image("image/png"),
    dependencies=[Depends(limit_sampling)],
)
async def timeline_png(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    n: Annotated[int, _TIMELINE["n"]] = 8,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    rows: Annotated[int, _TIMELINE["rows"]] = 16,
    ema: EmaChoice = EmaChoice.auto,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The same seeds at every stored checkpoint: one row per checkpoint, labelled with its step."""
    return _picture(
        await services.pictures.timeline(
            job_id=job_id,
            principal=principal,
            n=n,
            seed=seed,
            rows=rows,
            ema=ema,
            animated=False,
            frame_ms=0,
            if_none_match=if_none_match,
        )
    )


@router.get(
    "/timeline.gif",
    response_class=Response,
    responses=_image("image/gif"),
    dependencies=[Depends(limit_sampling)],
)
async def timeline_gif(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    n: Annotated[int, _TIMELINE["n"]] = 8,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    rows: Annotated[int, _TIMELINE["rows"]] = 16,
    ema: EmaChoice = EmaChoice.auto,
    frame_ms: Annotated[int, Query(ge=FRAME_MS[0], le=FRAME_MS[1])] = 500,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The timeline as an animation: one frame per checkpoint."""
    return _picture(
        await services.pictures.timeline(
            job_id=job_id,
            principal=principal,
            n=n,
            seed=seed,
            rows=rows,
            ema=ema,
            animated=True,
            frame_ms=frame_ms,
            if_none_match=if_none_match,
        )
    )
