"""The API's JSON as small pydantic models, independent of the server's own schemas.

app.api.schemas builds its models from SQLAlchemy rows and gan_core's config, so importing
it would pull both in; these mirror its fields instead. Unknown fields are kept (a newer
server's additions survive a round trip) and most fields have defaults (an older server's
answers still parse).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FINISHED = frozenset({"succeeded", "failed", "canceled"})


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    def api_json(self) -> dict[str, Any]:
        """The JSON object the API sent (fields it did not send are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class JobProgress(ApiModel):
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    losses: dict[str, float] | None = None
    images_per_sec: float | None = None
    eta_seconds: float | None = None
    # what a running job is doing: starting, preparing_scorer, training, scoring, handing_back
    phase: str | None = None


class Job(ApiModel):
    id: str
    status: str  # queued | running | succeeded | failed | canceled
    name: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    dataset_id: str | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    error: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    first_step_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    best_checkpoint_id: str | None = None
    best_fd: float | None = None
    queued_reason: str | None = None  # why a queued job waits for a worker that is not there
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Succeeded, failed or canceled: it will not change again unless resumed."""
        return self.status in FINISHED


class JobsPage(ApiModel):
    items: list[Job]
    next_cursor: str | None = None


class GeneratorScores(ApiModel):
    fd: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    classes_covered: int | None = None
    num_classes: int | None = None


class TranslatorScores(ApiModel):
    """A translator's, on the held-out split: FD/KID of A->B; paired: L1, PSNR, SSIM against
    the targets; unpaired: FD/KID of B->A."""

    fd: float
    kid: float
    kid_std: float
    l1: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    fd_b2a: float | None = None
    kid_b2a: float | None = None
    kid_std_b2a: float | None = None


class CheckpointScores(ApiModel):
    num_samples: int | None = None
    extractor: str | None = None
    ema: GeneratorScores | TranslatorScores | None = None
    raw: GeneratorScores | TranslatorScores | None = None
    preferred: Literal["ema", "raw"] | None = None
    fd: float | None = None
    inception: dict[str, Any] | None = None
    seconds: float | None = None
    error: str | None = None
    # a translator's (kind paired | unpaired): the preferred one's numbers, and the baselines
    kind: str | None = None
    kid: float | None = None
    kid_std: float | None = None
    l1: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    fd_b2a: float | None = None
    kid_b2a: float | None = None
    kid_std_b2a: float | None = None
    baseline: dict[str, float] | None = None
    num_inputs: dict[str, int] | None = None


class Checkpoint(ApiModel):
    id: str
    job_id: str
    step: int
    size_bytes: int = 0
    files: dict[str, Any] = Field(default_factory=dict)
    losses: dict[str, Any] | None = None
    created_at: datetime | None = None
    score_status: str = "off"  # pending | scored | failed | off
    scores: CheckpointScores | None = None
    best: bool = False
    links: dict[str, str] = Field(default_factory=dict)


class Dataset(ApiModel):
    id: str
    name: str
    kind: str
    builtin: bool = False
    available: bool = True
    where: str | None = None
    num_images: int | None = None
    channels: int | None = None
    image_size: int | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    pairing: str | None = None  # paired | unpaired (kind is too, for uploads); None: images
    domains: dict[str, dict[str, Any]] | None = None  # A and B: num_images, channels, ...
    val_size: int | None = None  # held out for validation (pairs)
    size_bytes: int | None = None
    created_at: datetime | None = None


class TrainPoint(ApiModel):
    step: int
    step_from: int
    time: datetime
    d_loss: float | None = None
    g_loss: float | None = None
    images_per_sec: float | None = None


class CheckpointHistory(ApiModel):
    id: str
    step: int
    created_at: datetime | None = None
    stored: bool = True
    best: bool = False
    score_status: str = "off"
    scores: CheckpointScores | None = None


class Metrics(ApiModel):
    job_id: str
    status: str
    best_checkpoint_id: str | None = None
    train: list[TrainPoint] = Field(default_factory=list)
    checkpoints: list[CheckpointHistory] = Field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``event`` is job | checkpoint | deleted; ``data`` parsed JSON."""

    id: int | None
    event: str
    data: Any

    @property
    def job(self) -> Job | None:
        return Job.model_validate(self.data) if self.event == "job" else None

    @property
    def checkpoint(self) -> Checkpoint | None:
        return Checkpoint.model_validate(self.data) if self.event == "checkpoint" else None


class Png(bytes):
    """An image's bytes, with what the server said about it."""

    media_type: str = "image/png"
    etag: str | None = None
    checkpoint_id: str | None = None  # X-Checkpoint-Id: what latest/best resolved to
    step: int | None = None  # X-Checkpoint-Step

    def image(self) -> Any:
        """The image as a PIL.Image.Image (Pillow is imported only here)."""
        import io

        from PIL import Image

        img = Image.open(io.BytesIO(self))
        img.load()
        return img
