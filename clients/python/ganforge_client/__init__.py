"""A Python client of ganforge's HTTP API: ``from ganforge_client import Client``.

It talks HTTP only (httpx and pydantic; Pillow for ``image=True``): no torch, no server code,
so it runs wherever the server's API can be reached. ``pip install ./clients/python``.

    with Client("http://127.0.0.1:8000", key) as gf:   # or GANFORGE_URL / GANFORGE_KEY
        job = gf.create_job({"dataset": "shapes", "steps": 2000})
        job = gf.wait(job.id, progress=lambda j: print(j.progress.step))  # JobFailed if not
        png = gf.samples(job.id, "best", n=16, nrow=4)

The names below are imported on first use, so ``import ganforge_client.cli`` (which the
server's ``ganforge`` command does for its remote verbs) does not load httpx or pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ganforge_client.api import Client
    from ganforge_client.errors import (
        ApiError,
        Conflict,
        ConnectionFailed,
        Invalid,
        JobCanceled,
        JobFailed,
        NotFound,
        RateLimited,
        Unauthorized,
        Unavailable,
    )
    from ganforge_client.events import EventStream
    from ganforge_client.folders import FolderTranslation, TranslationFailed
    from ganforge_client.models import (
        Checkpoint,
        CheckpointScores,
        Dataset,
        Event,
        GeneratorScores,
        Job,
        JobProgress,
        JobsPage,
        Metrics,
        Png,
    )

_MODULES = {
    "api": ["Client"],
    "errors": [
        "ApiError",
        "Conflict",
        "ConnectionFailed",
        "Invalid",
        "JobCanceled",
        "JobFailed",
        "NotFound",
        "RateLimited",
        "Unauthorized",
        "Unavailable",
    ],
    "events": ["EventStream"],
    "folders": ["FolderTranslation", "TranslationFailed"],
    "models": [
        "Checkpoint",
        "CheckpointScores",
        "Dataset",
        "Event",
        "GeneratorScores",
        "Job",
        "JobProgress",
        "JobsPage",
        "Metrics",
        "Png",
    ],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
# (a literal, so linters and type checkers read it)

__all__ = [
    "ApiError",
    "Checkpoint",
    "CheckpointScores",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "Event",
    "EventStream",
    "FolderTranslation",
    "GeneratorScores",
    "Invalid",
    "Job",
    "JobCanceled",
    "JobFailed",
    "JobProgress",
    "JobsPage",
    "Metrics",
    "NotFound",
    "Png",
    "RateLimited",
    "TranslationFailed",
    "Unauthorized",
    "Unavailable",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ganforge_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ganforge_client.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
