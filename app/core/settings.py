"""The service's one settings class; every field is a ``GANFORGE_*`` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANFORGE_", extra="ignore")

    data_dir: Path = Field(
        Path(".ganforge"),
        description="where the embedded defaults live: SQLite file, artifact store, broker folder",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/ganforge.db"
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (redis://...); unset = embedded mode: serve starts its own "
        "worker on a filesystem broker under <data_dir>/broker",
    )
    store_dir: Path | None = Field(
        None, description="artifact store for checkpoints and uploads; default <data_dir>/store"
    )
    store_url: str | None = Field(
        None,
        description="s3://bucket/prefix: keep artifacts in an S3-compatible store (endpoint "
        "and credentials from the AWS_* variables); GANFORGE_STORE_DIR is then its local cache",
    )
    store_min_free_bytes: int = Field(
        2 << 30, ge=0, description="/readyz reports the store 'degraded' with less free space"
    )
    dataset_dirs: list[Path] = Field(
        default_factory=list, description="extra folders searched for built-in datasets (JSON list)"
    )
    allow_download: bool = Field(False, description="let workers download missing built-ins")
    queue: str = Field(
        "gpu",
        description="Celery queue that training jobs go to (a job on N > 1 devices: "
        "<queue>.devices-N, consumed by workers that announce at least N)",
    )
    worker_devices: int | None = Field(
        None,
        ge=1,
        le=64,
        description="devices this worker announces and trains one job on: its GPUs, or on a "
        "CPU the processes a job may run as; unset: the GPUs CUDA sees, else 1",
    )
    collective_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="a job on several devices fails its group (and goes back to the queue) "
        "when one rank waits this long for the others",
    )
    host: str = Field("127.0.0.1", description="address `ganforge serve` binds")
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="level of serve's and worker's logs; DEBUG (or `--verbose`) also shows "
        "the libraries' start-up lines held back by default (Alembic's, Celery's banner)",
    )
    # Redis redelivers an unacknowledged message after this many seconds. Training runs
    # for hours, so this is long; a job whose worker died is found sooner by its lease.
    visibility_timeout: int = Field(6 * 3600, ge=60)
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="a running job whose worker has not renewed its lease for this long is stale",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="a job whose worker dies this many times (e.g. out of memory) is "
        "failed instead of re-queued again",
    )
    requeue_after_seconds: float = Field(
        60.0,
        gt=0,
        description="a job queued this long since its message was sent gets the "
        "message again (a broker restarted without persistence loses messages), but only "
        "while the broker holds fewer messages than there are queued jobs: a job waiting its "
        "turn behind others is not re-sent; duplicates are harmless",
    )
    progress_interval: float = Field(1.0, gt=0, description="seconds between progress writes")
    worker_seen_seconds: float = Field(
        60.0, gt=0, description="/readyz wants a worker heartbeat at most this old (fleet mode)"
    )
    score_samples: int = Field(
        2000,
        ge=0,
        description="images generated per generator to score each checkpoint "
        "(FD, KID, precision/recall in the dataset's own feature space); 0 turns scoring off",
    )
    inception_weights: Path | None = Field(
        None,
        description="a local copy of the standard FID Inception-v3 weights (torch-fidelity's "
        "pt_inception-2015-12-05); set, checkpoints also get the standard FID/KID",
    )
    inception_samples: int = Field(1000, ge=2, description="images per generator for Inception FID")
    inception_reference_images: int = Field(
        2000, ge=2, description="real images behind the Inception reference statistics"
    )
    history_points: int = Field(
        500,
        ge=10,
        le=100_000,
        description="a job's loss history keeps between this many and "
        "twice as many points (older reports are merged)",
    )
    events_keepalive_seconds: float = Field(
        15.0, gt=0, description="a server-sent event stream sends a comment this often when idle"
    )
    generator_cache_size: int = Field(8, ge=1, description="generators kept loaded for sampling")
    sample_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="how generators render samples: bf16 where the CPU has native bf16 "
        "(auto), or fp32 always",
    )
    png_cache_size: int = Field(256, ge=0, description="rendered PNGs kept for repeated requests")
    png_cache_bytes: int = Field(
        128 << 20, ge=0, description="total size of the rendered PNGs kept (a large grid is MBs)"
    )
    max_upload_bytes: int = Field(1 << 30, ge=1024, description="largest dataset upload")
    max_upload_entries: int = Field(
        100_000, ge=1, description="most entries (files and folders) in an uploaded zip or npz"
    )
    max_upload_unpacked_bytes: int = Field(
        4 << 30, ge=1024, description="largest total size an uploaded archive may unpack to"
    )
    max_upload_ratio: float = Field(
        200.0,
        gt=1,
        description="largest expansion ratio (unpacked/packed) of an uploaded archive and of each "
        "member of 1 MiB or more; above it the archive is refused as a likely zip bomb",
    )
    max_upload_pixels: int = Field(
        1 << 30,
        ge=1,
        description="decoded pixels per upload, summed over its images (read "
        "from the image headers before anything is decoded; 413 past it)",
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, description="uploads one API process receives at once (503 past it)"
    )
    upload_validation_workers: int = Field(
        1,
        ge=1,
        description="uploads unpacked and decoded at once per API process; the "
        "others wait their turn (CPU and memory stay bounded)",
    )
    upload_idle_timeout_seconds: float = Field(
        30.0, gt=0, description="an upload body that sends nothing for this long is cut off (408)"
    )
    upload_min_bytes_per_second: float = Field(
        16384.0,
        ge=0,
        description="after the first idle timeout, an upload body slower than "
        "this on average is cut off (408)",
    )
    webhook_allow_private: bool = Field(
        False,
        description="let webhooks reach loopback, private, link-local and other "
        "non-public addresses (refused by default: server-side request forgery)",
    )
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=60, description="per delivery attempt")
    webhook_retry_seconds: float = Field(
        86400.0,
        gt=0,
        description="a delivery that keeps failing is retried (exponential backoff "
        "with jitter) for this long after its event, then marked failed",
    )
    webhook_poll_seconds: float = Field(1.0, gt=0, description="how often the outbox is read")
    webhook_backoff_seconds: float = Field(
        2.0, gt=0, description="first retry delay; doubles per failure (capped at 10 min), x0.5-1.5"
    )
    metrics_auth: bool = Field(
        False,
        description="/metrics needs an admin API key (default: open, like most exporters; "
        "keep the port private or set this)",
    )
    auth: bool = Field(
        True, description="require API keys; false serves everyone as admin (logged as a warning)"
    )
    max_jobs_per_owner: int = Field(4, ge=1, description="queued + running jobs per owner")
    max_devices_per_owner: int = Field(
        8, ge=1, description="devices (config.devices) of one owner's queued + running jobs"
    )
    max_steps_per_job: int = Field(1_000_000, ge=1, description="largest config.steps")
    min_checkpoint_every: int = Field(
        25,
        ge=1,
        description="smallest config.checkpoint_every: each checkpoint is written, scored "
        "and announced, so a tiny one multiplies a job's cost",
    )
    max_checkpoints_per_job: int = Field(
        200,
        ge=1,
        description="most checkpoints one job may make: ceil(steps / checkpoint_every) "
        "must not be above it",
    )
    max_job_memory_bytes: int = Field(
        64 << 30,
        ge=1 << 20,
        description="largest estimated training memory of a job's config "
        "(gan_core.memory: weights, optimizer state, activations); refused past it",
    )
    max_stored_bytes_per_owner: int = Field(
        50 << 30, ge=0, description="datasets + checkpoints + folder translations per owner"
    )
    sample_rate: float = Field(
        20.0, ge=0, description="sampling requests per second per key (0 = off)"
    )
    sample_burst: int = Field(40, ge=1, description="sampling requests allowed in a burst")
    render_megapixels_per_second: float = Field(
        2.0,
        ge=0,
        description="rendering per key, priced by pixels generated (images x H x W), "
        "shared by all API replicas through Redis (0 = no limit)",
    )
    render_burst_megapixels: float = Field(
        20.0, gt=0, description="rendering a key may do in a burst (a request costs at most this)"
    )
    render_chunk: int = Field(
        32,
        ge=1,
        le=256,
        description="images rendered per slot turn: a large render yields to "
        "other owners between chunks",
    )
    max_samples: int = Field(256, ge=1, description="largest n for samples.png")
    max_interpolation_steps: int = Field(64, ge=2)

    @field_validator("store_url")
    @classmethod
    def _s3_url(cls, v: str | None) -> str | None:
        if not v:  # empty: the local store (compose passes an unset variable as "")
            return None
        if not v.startswith("s3://") or not v[5:].split("/", 1)[0]:
            raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def resolved_database_url(self) -> str:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'ganforge.db').resolve()}"
        # Plain postgresql:// URLs get the psycopg 3 driver we ship with.
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def resolved_store_dir(self) -> Path:
        return (self.store_dir or self.data_dir / "store").resolve()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
