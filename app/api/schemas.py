"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.core.jobs import fleet
from app.core.models import Checkpoint, Job
from app.core.serving.history import History
from gan_core.config import TrainConfig
from gan_core.jobconfig import JobConfig


def _as_utc(value: datetime) -> datetime:
    # The database stores naive UTC; without an offset the JSON is not an RFC 3339 date-time.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


def _printable(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters (NUL, newline, ...) are not allowed")
    return value


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_printable)] = Field("job", min_length=1, max_length=200)
    config: JobConfig = Field(
        default_factory=TrainConfig,
        description="what to train, by `kind`: 'noise' (the default: noise to images), 'paired' "
        "(pix2pix, A -> B from pairs) or 'unpaired' (CycleGAN, A <-> B from two domains); each "
        "kind takes only its own fields",
    )
    webhook_url: Annotated[str, AfterValidator(_printable)] | None = Field(
        None, max_length=2000, description="POST the job's events here (Standard Webhooks)"
    )
    webhook_events: (
        list[Literal["started", "checkpoint", "succeeded", "failed", "canceled", "translation"]]
        | None
    ) = Field(
        None,
        max_length=6,
        description="which events (default: all six; 'translation' is the end of each folder "
        "translation made from the job's checkpoints)",
    )


class JobResume(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # strict: JSON `true` or "5" is not a step count (lax mode would take true as 1)
    steps: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        strict=True,
        description="new total step count (default: the job's own)",
    )
    devices: int | None = Field(
        None,
        ge=1,
        le=64,
        strict=True,
        description="train on this many devices from here on (default: the job's own); a "
        "checkpoint does not depend on how many ranks wrote it",
    )


class JobProgress(BaseModel):
    step: int
    total_steps: int
    epoch: float
    losses: dict[str, float] | None
    images_per_sec: float | None
    eta_seconds: float | None
    augment_p: float | None = Field(
        None,
        description="the probability each augment op is applied with, at the last report "
        "(augment_p adaptive: where it has moved to); null when the job augments nothing",
    )
    phase: Literal["starting", "preparing_scorer", "training", "scoring", "handing_back"] | None = (
        Field(
            None,
            description="what a running job is doing (null unless running): starting (loading "
            "its data), preparing_scorer (the first job on new data trains the scorer's feature "
            "extractor: tens of seconds at step 0), training, scoring (a checkpoint; training "
            "waits), handing_back (a worker's shutdown: checkpoint, then back to the queue)",
        )
    )


class JobPublic(BaseModel):
    id: str
    name: str
    status: str
    config: dict[str, Any]
    dataset_id: str | None
    progress: JobProgress
    error: str | None
    cancel_requested: bool
    attempts: int
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    first_step_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    updated_at: UtcDateTime
    best_checkpoint_id: str | None = Field(
        description="the stored checkpoint with the lowest FD so far (null until one is scored)"
    )
    best_fd: float | None
    webhook_url: str | None
    webhook_events: list[str] | None
    rollbacks: list[dict[str, Any]] = Field(
        description="divergences the run rolled back from (config.on_divergence = 'rollback')"
    )
    queued_reason: str | None = Field(
        None,
        description="why a queued job waits for a worker that is not there: none is live, or "
        "none has config.devices devices (null while one that fits is live: it waits its turn)",
    )
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job, live_devices: list[int] | None = None) -> JobPublic:
        """The job as the API shows it; ``live_devices`` (app.core.jobs.fleet) to say why a
        queued one waits."""
        base = f"/v1/jobs/{job.id}"
        # a translator's pictures are translations of held-out inputs, not samples from noise
        translator = (job.config or {}).get("kind") in ("paired", "unpaired")
        picture = "translations.png" if translator else "samples.png"
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            config=job.config,
            dataset_id=job.dataset_id,
            progress=JobProgress(
                step=job.step,
                total_steps=job.total_steps,
                epoch=job.epoch,
                losses=job.losses,
                images_per_sec=job.images_per_sec,
                eta_seconds=job.eta_seconds,
                augment_p=job.augment_p,
                phase=job.phase if job.status == "running" else None,
            ),
            error=job.error,
            cancel_requested=job.cancel_requested,
            attempts=job.attempts,
            created_at=job.created_at,
            started_at=job.started_at,
            first_step_at=job.first_step_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            best_checkpoint_id=job.best_checkpoint_id,
            best_fd=job.best_fd,
            webhook_url=job.webhook_url,
            webhook_events=job.webhook_events,
            rollbacks=job.rollbacks or [],
            queued_reason=fleet.queued_reason(job, live_devices)
            if live_devices is not None
            else None,
            links={
                "self": base,
                "cancel": f"{base}/cancel",
                "resume": f"{base}/resume",
                "checkpoints": f"{base}/checkpoints",
                "events": f"{base}/events",
                "metrics": f"{base}/metrics",
                "losses": f"{base}/losses.png",
                "timeline": f"{base}/timeline.png",
                "samples": f"{base}/checkpoints/latest/{picture}",
                "best_samples": f"{base}/checkpoints/best/{picture}",
                **({"translate": f"{base}/checkpoints/latest/translate"} if translator else {}),
            },
        )


class JobsPublic(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None


class GeneratorScores(BaseModel):
    """One generator's scores in the dataset's feature space (lower FD/KID, higher P/R: better)."""

    fd: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    classes_covered: int | None = None
    num_classes: int | None = None


class TranslatorScores(BaseModel):
    """One translator's scores on the dataset's held-out split (gan_core.metrics.translation):
    FD/KID of its A->B translations in B's feature space (lower: better); paired: L1 (lower),
    PSNR in dB and SSIM (higher) against the held-out targets; unpaired: the B->A direction's
    FD/KID in A's feature space."""

    fd: float
    kid: float
    kid_std: float
    l1: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    fd_b2a: float | None = None
    kid_b2a: float | None = None
    kid_std_b2a: float | None = None


class CheckpointScores(BaseModel):
    """What the worker measured on a checkpoint (app.core.serving.scores); a translator's
    (``kind`` paired | unpaired) also has the preferred one's numbers at the top level."""

    num_samples: int | None = None
    extractor: str | None = Field(None, description="classifier | rotation: the feature space")
    ema: GeneratorScores | TranslatorScores | None = None
    raw: GeneratorScores | TranslatorScores | None = None
    preferred: Literal["ema", "raw"] | None = Field(
        None,
        description="the generator with the lower FD (an unpaired translator's: the lower mean "
        "of each direction's FD over its baseline): what ema=auto samples from",
    )
    fd: float | None = Field(
        None,
        description="the preferred generator's FD (a translator's: A->B; best follows it, or "
        "for an unpaired translator both directions' FD over their baselines)",
    )
    kind: Literal["paired", "unpaired"] | None = Field(
        None, description="a translator's: the job's kind (absent for noise jobs)"
    )
    kid: float | None = Field(None, description="translator: the preferred one's KID (A->B)")
    kid_std: float | None = None
    l1: float | None = Field(
        None, description="paired: mean |translation - target| on [-1, 1] (lower: better)"
    )
    psnr: float | None = Field(None, description="paired: mean PSNR in dB (higher: better)")
    ssim: float | None = Field(None, description="paired: mean SSIM, at most 1 (higher: better)")
    fd_b2a: float | None = Field(None, description="unpaired: FD of B->A in A's feature space")
    kid_b2a: float | None = None
    kid_std_b2a: float | None = None
    baseline: dict[str, float] | None = Field(
        None,
        description="translator: the same numbers for the held-out real targets (FD/KID: the "
        "floor) and for copying the input (L1/PSNR/SSIM: doing nothing)",
    )
    num_inputs: dict[str, int] | None = Field(
        None, description="translator: held-out images translated per direction"
    )
    inception: dict[str, Any] | None = Field(
        None, description="standard FID/KID per generator, when GANFORGE_INCEPTION_WEIGHTS is set"
    )
    seconds: float | None = None
    error: str | None = Field(None, description="why scoring failed (score_status 'failed')")


class CheckpointPublic(BaseModel):
    id: str
    job_id: str
    step: int
    size_bytes: int
    files: dict[str, Any]
    losses: dict[str, Any] | None
    created_at: UtcDateTime
    score_status: Literal["pending", "scored", "failed", "off"]
    scores: CheckpointScores | None
    best: bool = Field(description="the job's best checkpoint (what checkpoints/best resolves to)")
    links: dict[str, str]

    @classmethod
    def of(
        cls, ckpt: Checkpoint, best_id: str | None = None, job_kind: str = "noise"
    ) -> CheckpointPublic:
        """A checkpoint as the API shows it; ``job_kind`` (its job's config kind) says which
        pictures it links: samples for a noise job, translations for a translator."""
        base = f"/v1/jobs/{ckpt.job_id}/checkpoints/{ckpt.id}"
        pictures = (
            {"translate": f"{base}/translate", "translations": f"{base}/translations.png"}
            if job_kind in ("paired", "unpaired")
            else {
                "samples": f"{base}/samples.png",
                "interpolation": f"{base}/interpolation.png",
            }
        )
        return cls(
            id=ckpt.id,
            job_id=ckpt.job_id,
            step=ckpt.step,
            size_bytes=ckpt.size_bytes,
            files=ckpt.files,
            losses=ckpt.losses,
            created_at=ckpt.created_at,
            score_status=ckpt.score_status,
            scores=CheckpointScores.model_validate(ckpt.scores) if ckpt.scores else None,
            best=best_id is not None and best_id == ckpt.id,
            links={
                "self": base,
                "download": f"{base}/download",
                **pictures,
                "onnx": f"{base}/generator.onnx",
                "torchscript": f"{base}/generator.pt",
            },
        )


class CheckpointsPublic(BaseModel):
    items: list[CheckpointPublic]


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "not ready"]
    checks: dict[str, str] = Field(description="database, store, broker, workers: 'ok' or why not")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None


class TrainPointPublic(BaseModel):
    """The mean of the progress reports over steps step_from..step (a bucket of the history)."""

    step: int
    step_from: int
    time: UtcDateTime
    d_loss: float | None
    g_loss: float | None
    images_per_sec: float | None
    augment_p: float | None = Field(
        None, description="the mean augmentation probability over the bucket; null: none"
    )


class CheckpointHistoryPublic(BaseModel):
    id: str
    step: int
    created_at: UtcDateTime
    stored: bool = Field(description="false once pruned to keep_checkpoints (files gone)")
    best: bool
    score_status: Literal["pending", "scored", "failed", "off"]
    scores: CheckpointScores | None


class MetricsPublic(BaseModel):
    job_id: str
    status: str
    best_checkpoint_id: str | None
    train: list[TrainPointPublic] = Field(description="loss history, oldest first (bounded)")
    checkpoints: list[CheckpointHistoryPublic] = Field(
        description="every checkpoint the run wrote, oldest first, with its scores"
    )

    @classmethod
    def of(cls, h: History) -> MetricsPublic:
        best = h.job.best_checkpoint_id
        return cls(
            job_id=h.job.id,
            status=h.job.status,
            best_checkpoint_id=best,
            train=[
                TrainPointPublic(
                    step=m.step_to,
                    step_from=m.step_from,
                    time=m.at,
                    d_loss=m.d_loss,
                    g_loss=m.g_loss,
                    images_per_sec=m.images_per_sec,
                    augment_p=m.augment_p,
                )
                for m in h.train
            ],
            checkpoints=[
                CheckpointHistoryPublic(
                    id=c.id,
                    step=c.step,
                    created_at=c.created_at,
                    stored=c.pruned_at is None,
                    best=c.id == best,
                    score_status=c.score_status,
                    scores=CheckpointScores.model_validate(c.scores) if c.scores else None,
                )
                for c in h.checkpoints
            ],
        )
