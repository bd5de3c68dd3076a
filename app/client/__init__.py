"""A Python client of ganforge's HTTP API: ``from app.client import Client``.

It talks HTTP only (httpx and pydantic; Pillow for ``image=True``): no torch, no gan_core,
no SQLAlchemy, so it runs wherever the server's API can be reached.

    with Client("http://127.0.0.1:8000", key) as gf:   # or GANFORGE_URL / GANFORGE_KEY
        job = gf.create_job({"dataset": "shapes", "steps": 2000})
        job = gf.wait(job.id, progress=lambda j: print(j.progress.step))
        png = gf.samples(job.id, "best", n=16, nrow=4)
"""

from app.client.api import Client
from app.client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    Invalid,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from app.client.events import EventStream
from app.client.models import (
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
    "GeneratorScores",
    "Invalid",
    "Job",
    "JobProgress",
    "JobsPage",
    "Metrics",
    "NotFound",
    "Png",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
]
