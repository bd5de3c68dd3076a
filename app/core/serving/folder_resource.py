"""A folder translation as the API shows it (GET /v1/translations/{id}), as plain JSON: one
shape for the API's TranslationPublic and the webhook events that carry it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.core.models import Translation


def _utc(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"  # stored naive, in UTC


def translation_resource(row: Translation) -> dict[str, Any]:
    """The translation's fields, progress, report and the links that apply to its status."""
    base = f"/v1/translations/{row.id}"
    links = {"self": base, "checkpoint": f"/v1/jobs/{row.job_id}/checkpoints/{row.checkpoint_id}"}
    if row.status in ("queued", "running"):
        links["cancel"] = f"{base}/cancel"
    if row.status == "succeeded":
        links["result"] = f"{base}/result.zip"
    report: dict[str, Any] = row.report or {}
    return {
        "id": row.id,
        "status": row.status,
        "job_id": row.job_id,
        "checkpoint_id": row.checkpoint_id,
        "checkpoint_step": row.checkpoint_step,
        "direction": row.direction,
        "ema": row.ema,
        "filename": row.filename,
        "progress": {"done": row.done, "total": row.total, "failed": row.failed},
        "report": {
            "translated": report.get("translated"),
            "failed": list(report.get("failed", [])),
            "skipped": list(report.get("skipped", [])),
        },
        "error": row.error,
        "result_bytes": row.result_bytes,
        "created_at": _utc(row.created_at),
        "started_at": _utc(row.started_at),
        "finished_at": _utc(row.finished_at),
        "links": links,
    }
