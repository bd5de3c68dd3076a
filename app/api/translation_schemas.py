"""Response bodies of /v1/translations: folders of images translated by a checkpoint."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.api.schemas import UtcDateTime
from app.core.models import Translation


class TranslationProgress(BaseModel):
    done: int = Field(description="images handled so far (translated or reported)")
    total: int = Field(description="images in the archive")
    failed: int = Field(description="of the done, those not translated (see report)")


class TranslationReport(BaseModel):
    translated: int | None = Field(None, description="images in result.zip (once finished)")
    failed: list[dict[str, Any]] = Field(
        default_factory=list,
        description="images not translated, each {name, error, status: the HTTP status POST "
        "…/translate gives that image} (the first 1000; all of them in result.zip's "
        "report.json)",
    )
    skipped: list[str] = Field(
        default_factory=list, description="archive members that are not images by their name"
    )


class TranslationPublic(BaseModel):
    id: str
    status: str = Field(description="queued | running | succeeded | failed | canceled")
    job_id: str
    checkpoint_id: str = Field(description="the checkpoint the ref named at submit (fixed)")
    checkpoint_step: int
    direction: str
    ema: bool = Field(description="whether the averaged (EMA) weights translate")
    filename: str | None
    progress: TranslationProgress
    report: TranslationReport
    error: str | None = Field(
        None,
        description="why the run failed as a whole, or why the server canceled it (its job "
        "was deleted)",
    )
    result_bytes: int | None = Field(
        None, description="size of result.zip, once succeeded (counts toward the storage quota)"
    )
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    links: dict[str, str]

    @classmethod
    def of(cls, row: Translation) -> TranslationPublic:
        base = f"/v1/translations/{row.id}"
        links = {
            "self": base,
            "checkpoint": f"/v1/jobs/{row.job_id}/checkpoints/{row.checkpoint_id}",
        }
        if row.status in ("queued", "running"):
            links["cancel"] = f"{base}/cancel"
        if row.status == "succeeded":
            links["result"] = f"{base}/result.zip"
        report: dict[str, Any] = row.report or {}
        return cls(
            id=row.id,
            status=row.status,
            job_id=row.job_id,
            checkpoint_id=row.checkpoint_id,
            checkpoint_step=row.checkpoint_step,
            direction=row.direction,
            ema=row.ema,
            filename=row.filename,
            progress=TranslationProgress(done=row.done, total=row.total, failed=row.failed),
            report=TranslationReport(
                translated=report.get("translated"),
                failed=list(report.get("failed", [])),
                skipped=list(report.get("skipped", [])),
            ),
            error=row.error,
            result_bytes=row.result_bytes,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            links=links,
        )


class TranslationsPublic(BaseModel):
    items: list[TranslationPublic]
    next_cursor: str | None = None
