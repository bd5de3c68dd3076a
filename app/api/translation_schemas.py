"""Response bodies of /v1/translations: folders of images translated by a checkpoint."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.api.schemas import UtcDateTime
from app.core.models import Translation
from app.core.serving.folder_resource import translation_resource


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
        # one shape with the webhook events that carry a translation
        return cls.model_validate(translation_resource(row))


class TranslationsPublic(BaseModel):
    items: list[TranslationPublic]
    next_cursor: str | None = None
