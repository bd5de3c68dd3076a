"""Checkpoint scores in the service: the scorers a worker uses, and what their scores decide.

A dataset's feature extractor and real-data reference are trained once for the whole fleet:
they live in the artifact store under ``scorers/<data fingerprint>-<kind>-v<recipe>-<shape>``,
the first worker that needs them builds them under a database lock while the others wait,
and every later job on the same data (by content, not by name) reuses them. A worker also
keeps the last few in memory between jobs. A translation job's target domains (B; and A when
unpaired) are such datasets, each with its own extractor (``for_translation``).

The scores decide ``best`` (the lowest FD of a checkpoint's better generator; ties to the
newer), ``ema=auto`` (that better generator) and which checkpoints pruning must keep. An
unpaired translator's ``best`` and better generator follow both directions: the lowest
``selection_key`` (gan_core.metrics.translation: the mean of each direction's FD over its
floor), so that one whose B -> A collapsed is not chosen for its A -> B alone.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.artifacts.checkpoints import best_stored
from app.core.artifacts.store import LocalStore
from app.core.db import utcnow
from app.core.integrations import webhooks
from app.core.jobs import locks
from app.core.jobs.runs import bump_version, update_rows
from app.core.models import Checkpoint, Job
from app.core.serving import folder_translations
from app.core.settings import Settings
from gan_core.data import ImageTensorDataset
from gan_core.data.pairs import PairDataset
from gan_core.metrics import (
    FeatureClassifier,
    RealReference,
    build_reference,
    extractor_digest,
    load_inception,
    load_reference,
    save_reference,
)
from gan_core.metrics.inception import InceptionFeatures
from gan_core.metrics.scorer import CheckpointScorer, build_scorer, load_scorer, scorer_key
from gan_core.metrics.translation import TranslationScorer, domain_dataset, target_sides

log = logging.getLogger("ganforge.scores")


class Scorers:
    """The scorers of one worker process: from memory, from the store, or built (once, fleet-wide)."""

    def __init__(self, settings: Settings, store: LocalStore, holder: str, keep: int = 4):
        self.settings, self.store, self.holder, self.keep = settings, store, holder, keep
        self._memo: OrderedDict[tuple[str, str, bool], CheckpointScorer] = OrderedDict()
        self._inception: InceptionFeatures | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.score_samples > 0

    def for_dataset(
        self, dataset: ImageTensorDataset, device: torch.device, *, inception: bool = True
    ) -> CheckpointScorer:
        """The dataset's scorer; ``inception`` False: without the Inception FID even when its
        weights are set (a translation domain's: translators are scored in the domains' own
        feature spaces only)."""
        key = scorer_key(dataset)
        inception = inception and self.settings.inception_weights is not None
        memo_key = (key, str(device), inception)
        if memo_key in self._memo:
            self._memo.move_to_end(memo_key)
            return self._memo[memo_key]
        directory = self.store.cache_path(f"scorers/{key}")  # where a build writes

        def build() -> tuple[FeatureClassifier, RealReference]:
            log.warning("scorer %s: not in the store; training it (once for the fleet)", key)
            built = build_scorer(directory, dataset, device, log.info)
            self.store.publish(f"scorers/{key}")
            return built

        def load() -> tuple[FeatureClassifier, RealReference] | None:
            return load_scorer(self.store.local_path(f"scorers/{key}"), dataset, device, log.info)

        extractor, reference = locks.load_or_build(
            self.settings.resolved_database_url,
            f"scorer:{key}",
            self.holder,
            load=load,
            build=build,
        )
        log.info("scorer %s: ready", key)
        scorer = CheckpointScorer(
            extractor, reference, device, num_samples=self.settings.score_samples
        )
        if inception:
            scorer.inception = self._load_inception(device)
            scorer.inception_reference = self._inception_reference(key, dataset, scorer.inception)
            scorer.inception_samples = self.settings.inception_samples
        self._memo[memo_key] = scorer
        while len(self._memo) > self.keep:
            self._memo.popitem(last=False)
        return scorer

    def for_translation(self, data: PairDataset, device: torch.device) -> TranslationScorer:
        """A translation job's scorer. Each target domain's training split (B; and A when
        unpaired) is an unlabelled image dataset, and its extractor and reference are that
        dataset's scorer, got like any dataset's (``for_dataset``: from memory, from the
        store, or built once for the fleet, keyed by the images' content). The baselines and
        held-out split are the job's data's, computed here: call once per job."""
        domains: dict[str, tuple[FeatureClassifier, RealReference]] = {}
        for side in target_sides(data):
            scorer = self.for_dataset(domain_dataset(data, side), device, inception=False)
            domains[side] = (scorer.extractor, scorer.reference)
        return TranslationScorer(data, domains, device)

    def give_up_translation(self, data: PairDataset) -> None:
        """``give_up`` for each target domain of a translation job's data."""
        for side in target_sides(data):
            self.give_up(domain_dataset(data, side))

    def give_up(self, dataset: ImageTensorDataset) -> None:
        """Free the build locks this process may hold for the dataset's scorer: a shutdown
        abandoned its build, and the next worker should build it at once, not wait out the
        lock's ttl (a build in flight writes its files atomically, the last one last)."""
        key = scorer_key(dataset)
        for name in (f"scorer:{key}", f"scorer:{key}-inception"):
            locks.release(self.settings.resolved_database_url, name, self.holder)

    def _load_inception(self, device: torch.device) -> InceptionFeatures:
        if self._inception is None:
            assert self.settings.inception_weights is not None
            self._inception = load_inception(self.settings.inception_weights, device=device)
        return self._inception

    def _inception_reference(
        self, key: str, dataset: ImageTensorDataset, model: InceptionFeatures
    ) -> RealReference:
        folder = f"scorers/{key}-inception"
        path = self.store.cache_path(folder) / "reference.safetensors"
        digest = extractor_digest(model)  # other weights: another reference

        def load() -> RealReference | None:
            if not (self.store.local_path(folder) / "reference.safetensors").is_file():
                return None
            ref = load_reference(path)
            return ref if ref.extractor_digest == digest else None

        def build() -> RealReference:
            n = self.settings.inception_reference_images
            ref = build_reference(model, dataset.images, stats_size=n, features_size=n)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_reference(ref, path)
            self.store.publish(folder)
            return ref

        return locks.load_or_build(
            self.settings.resolved_database_url,
            f"scorer:{key}-inception",
            self.holder,
            load=load,
            build=build,
        )


def record_scores(
    session: Session,
    *,
    checkpoint_id: str,
    worker_id: str,
    scores: dict[str, Any] | None,
    error: str | None = None,
    off: bool = False,
) -> Checkpoint | None:
    """Put a checkpoint's scores (or why it has none, or with ``off`` that it gets none) on its
    row, update the job's best, and announce the checkpoint to the job's watchers. Only while
    ``worker_id`` holds the job."""
    ckpt = session.get(Checkpoint, checkpoint_id)
    if ckpt is None:
        return None
    held = update_rows(
        session,
        update(Job)
        .where(Job.id == ckpt.job_id, Job.lease_owner == worker_id)
        .values(updated_at=utcnow()),
    )
    if held != 1:
        session.rollback()
        return None
    if off:
        ckpt.score_status, ckpt.scores = "off", None
    elif scores is None:
        ckpt.score_status, ckpt.scores = "failed", {"error": error or "unknown error"}
    else:
        ckpt.score_status, ckpt.scores = "scored", scores
        ckpt.best_fd, ckpt.preferred = float(scores["fd"]), str(scores["preferred"])
        ckpt.score_seconds = scores.get("seconds")
    session.flush()
    job = session.get(Job, ckpt.job_id)
    assert job is not None
    _refresh_best(session, job)
    ckpt.event_version = bump_version(session, ckpt.job_id)
    webhooks.announce(session, ckpt.job_id, "checkpoint", ckpt)
    session.commit()
    return ckpt


def unscored_checkpoints(session: Session, *, job_id: str) -> list[Checkpoint]:
    """The job's stored checkpoints still waiting for their scores, oldest first: a worker's
    shutdown hands the job back before scoring, and whoever resumes it scores these."""
    return list(
        session.scalars(
            select(Checkpoint)
            .where(
                Checkpoint.job_id == job_id,
                Checkpoint.score_status == "pending",
                Checkpoint.pruned_at.is_(None),
            )
            .order_by(Checkpoint.step)
        )
    )


def _refresh_best(session: Session, job: Job) -> None:
    """The job's best: its lowest-FD checkpoint still stored (``best_stored``: an unpaired
    translator's follows both directions), and that checkpoint's FD."""
    best = best_stored(session, job)
    job.best_checkpoint_id = best.id if best else None
    job.best_fd = best.best_fd if best else None


def prune_rows(session: Session, *, job_id: str, keep: int) -> tuple[set[int], list[str]]:
    """Mark all but the newest ``keep`` stored checkpoints pruned, except the job's best and
    those unfinished folder translations use.

    Returns the steps the trainer must keep on disk beyond the newest ``keep`` (the best's),
    and the store keys of the checkpoints just pruned (for the caller to delete after).
    Rows go before files: a checkpoint the API lists always has its files. Pruned rows stay
    as the run's history (their scores feed the metrics and charts).
    """
    job = session.get(Job, job_id)
    if job is None:
        return set(), []
    stored = list(
        session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.pruned_at.is_(None))
            .order_by(Checkpoint.step.desc())
        )
    )
    # the best, and those an unfinished folder translation will read
    keep_ids = {job.best_checkpoint_id, *folder_translations.in_use(session, job_id=job_id)}
    protected = {c.step for c in stored if c.id in keep_ids}
    now, pruned = utcnow(), []
    for ckpt in stored[keep:]:
        if ckpt.step not in protected:
            ckpt.pruned_at = now
            pruned.append(ckpt.path)
    session.commit()
    return protected, pruned
