"""Prometheus metrics: what one API process counts, and the fleet's state read at scrape time.

Per process (counters and histograms of the ``prometheus_client`` library): HTTP requests
by route template and status with a latency histogram, sampling render seconds, PNG cache
hits and misses, the sizes of the batches translate requests ran in. When
``PROMETHEUS_MULTIPROC_DIR`` is set (several API processes on one machine), the library keeps
them in files there and a scrape of any process adds them all up.

Fleet-wide (``FleetCollector``, read from the database -- and the broker's queue length --
at every scrape, so every API replica reports the same truth): jobs by status, queue depth,
each worker's heartbeat age and the training images/s it reports, each running job's
augmentation probability (augment_p, which adaptive augmentation moves), histograms of
checkpoint write and scoring seconds (from the checkpoint records), folder translations by
status and the images they handled by outcome (gauges: a deleted translation drops out).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from app.core.db import session_scope, utcnow
from app.core.models import Checkpoint, Job, JobStatus, Translation, Worker
from app.core.settings import Settings

HTTP_REQUESTS = Counter(
    "ganforge_http_requests", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "ganforge_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RENDER_SECONDS = Histogram(
    "ganforge_sample_render_seconds",
    "seconds to render a sampling picture that was not cached",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE = Counter(
    "ganforge_sample_cache", "sampling picture requests by PNG cache result", ["result"]
)
TRANSLATE_BATCH = Histogram(
    "ganforge_translate_batch_size",
    "images per batch of concurrent translate requests for one model; forward: batched if "
    "some of them shared a forward pass, per-image if each had its own (a part size not yet "
    "proven to give the same bytes, or found not to)",
    ["forward"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16),
)
_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _histogram(name: str, doc: str, rows: Sequence[Any]) -> HistogramMetricFamily:
    """A histogram family from per-bucket counts a query returned: (count <= b..., count, sum)."""
    *cumulative, count, total = rows
    buckets = [(str(b), int(c or 0)) for b, c in zip(_SECONDS_BUCKETS, cumulative, strict=True)]
    buckets.append(("+Inf", int(count or 0)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(total or 0.0))


class FleetCollector(Collector):
    """The fleet's state, read at each scrape (blocking: scrapes run off the event loop)."""

    def __init__(self, settings: Settings, queue_length: Callable[[], int | None]):
        self.url, self.settings, self.queue_length = (
            settings.resolved_database_url,
            settings,
            queue_length,
        )

    def _seconds(self, s: Any, column: Any) -> list[Any]:
        query = select(
            *[func.sum(case((column <= b, 1), else_=0)) for b in _SECONDS_BUCKETS],
            func.count(column),
            func.sum(column),
        ).where(column.is_not(None))
        return list(s.execute(query).one())

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.url) as s:
            by_status = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            folders = dict(
                s.execute(
                    select(Translation.status, func.count()).group_by(Translation.status)
                ).all()
            )
            handled, failed = s.execute(
                select(func.sum(Translation.done), func.sum(Translation.failed))
            ).one()
            workers = list(
                s.execute(
                    select(Worker.id, Worker.last_seen, Worker.job_id, Worker.images_per_sec)
                ).all()
            )
            augmenting = list(
                s.execute(
                    select(Job.id, Job.augment_p).where(
                        Job.status == JobStatus.running.value, Job.augment_p.is_not(None)
                    )
                ).all()
            )
            writes = self._seconds(s, Checkpoint.write_seconds)
            scoring = self._seconds(s, Checkpoint.score_seconds)
        jobs = GaugeMetricFamily("ganforge_jobs", "jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        translations = GaugeMetricFamily(
            "ganforge_translations", "folder translations by status", labels=["status"]
        )
        for status in JobStatus:
            translations.add_metric([status.value], folders.get(status.value, 0))
        yield translations
        images = GaugeMetricFamily(
            "ganforge_translation_images",
            "images the folder translations on record handled, by outcome (running ones so far)",
            labels=["outcome"],
        )
        images.add_metric(["translated"], int(handled or 0) - int(failed or 0))
        images.add_metric(["failed"], int(failed or 0))
        yield images
        depth = GaugeMetricFamily(
            "ganforge_queue_depth",
            "queued jobs (database), and training messages waiting in the broker when it can say",
            labels=["source"],
        )
        depth.add_metric(["database"], by_status.get(JobStatus.queued.value, 0))
        messages = self.queue_length()
        if messages is not None:
            depth.add_metric(["broker"], messages)
        yield depth
        now = utcnow()
        age = GaugeMetricFamily(
            "ganforge_worker_heartbeat_age_seconds",
            "seconds since each worker process's last heartbeat",
            labels=["worker"],
        )
        speed = GaugeMetricFamily(
            "ganforge_worker_images_per_second",
            "training throughput a busy worker last reported",
            labels=["worker", "job"],
        )
        horizon = 10 * self.settings.worker_seen_seconds  # long-gone workers drop out
        for worker_id, last_seen, job_id, ips in workers:
            seconds = (now - last_seen).total_seconds()
            if seconds <= horizon:
                age.add_metric([worker_id], seconds)
                if job_id is not None and ips is not None:
                    speed.add_metric([worker_id, job_id], ips)
        yield age
        yield speed
        augment_p = GaugeMetricFamily(
            "ganforge_job_augment_p",
            "the augmentation probability a running job last reported (adaptive: where it is now)",
            labels=["job"],
        )
        for job_id, p in augmenting:
            if p is not None:  # the query asked for those only; mypy cannot tell
                augment_p.add_metric([job_id], p)
        yield augment_p
        yield _histogram(
            "ganforge_checkpoint_write_seconds", "seconds to write a checkpoint", writes
        )
        yield _histogram(
            "ganforge_checkpoint_score_seconds", "seconds to score a checkpoint", scoring
        )


class Exposition:
    """The text a scrape gets: this process's metrics (or all processes' in multiprocess mode)
    and the fleet's."""

    def __init__(self, settings: Settings, queue_length: Callable[[], int | None]):
        self.registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            MultiProcessCollector(self.registry)
        else:
            for collector in (HTTP_REQUESTS, HTTP_SECONDS, RENDER_SECONDS, CACHE):
                self.registry.register(collector)
            self.registry.register(TRANSLATE_BATCH)
        self.registry.register(FleetCollector(settings, queue_length))

    def render(self) -> bytes:
        return generate_latest(self.registry)
