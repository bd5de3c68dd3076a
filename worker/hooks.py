"""What a running job writes back: its lease, progress, phase, checkpoints and their scores.

``JobHooks`` turns the training loop's hooks into writes through app.core, each one
conditional on this worker still holding the job's lease.

A shutdown (SIGTERM) hands the job back first and scores later: a checkpoint being scored
is left unscored (the scoring runs in a helper thread that is abandoned), the shutdown's own
checkpoint is recorded unscored, and the worker that resumes the job scores both before it
trains on (``score_left_over``), so ``best`` ends up as if nothing had happened. A scorer
being prepared is abandoned too, its build lock freed for the next worker, and the job goes
back as it was (``HandBack``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch

from app.core.artifacts import checkpoints
from app.core.artifacts.store import LocalStore
from app.core.db import session_scope, utcnow
from app.core.jobs import runs
from app.core.serving import scores
from app.core.settings import Settings
from gan_core.checkpoint import CheckpointInfo
from gan_core.data import ImageTensorDataset
from gan_core.data.pairs import PairDataset
from gan_core.jobconfig import AnyConfig, is_translation
from gan_core.metrics.scorer import CheckpointScorer
from gan_core.metrics.translation import TranslationScorer
from gan_core.training import Progress, Rollback, TrainHooks, resolve_device

log = logging.getLogger("ganforge.worker")

# Set in a pool child by its SIGTERM handler (worker.celery_app): the running job writes a
# checkpoint at its next stop check and is handed back to the queue, for any worker to resume.
SHUTDOWN = threading.Event()


T = TypeVar("T")


class LeaseLost(Exception):
    """Another worker holds the job now: stop at once, write no checkpoint, record nothing."""


class HandBack(Exception):
    """A shutdown came before this run trained a step: give the job back as it is."""


class ShutdownFirst(Exception):
    """A shutdown came before a piece of work ended; it is left to the next worker."""


def unless_shutdown(work: Callable[[], T], name: str) -> T:
    """``work()``, run in a helper thread so that a shutdown need not wait for it: then
    ShutdownFirst, and the thread is abandoned (a daemon: it ends with the process)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        if SHUTDOWN.is_set() and thread.is_alive():
            raise ShutdownFirst(name)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class LeaseKeeper(threading.Thread):
    """Renews the job's lease in the background and notices cancel requests."""

    def __init__(self, url: str, job_id: str, worker_id: str, lease_seconds: float):
        super().__init__(daemon=True, name=f"lease-{job_id}")
        self.url, self.job_id, self.worker_id = url, job_id, worker_id
        self.lease_seconds = lease_seconds
        self.cancel = threading.Event()  # a user asked the job to stop
        self.lost = threading.Event()  # the lease was taken from us: stop, write nothing
        self._done = threading.Event()

    def run(self) -> None:
        interval = max(0.2, min(self.lease_seconds / 4, 2.0))
        while not self._done.wait(interval):
            try:
                with session_scope(self.url) as s:
                    flag = runs.renew_lease(
                        s,
                        job_id=self.job_id,
                        worker_id=self.worker_id,
                        lease_seconds=self.lease_seconds,
                    )
            except Exception:  # database briefly away: keep training, try again
                log.warning("could not renew lease of %s", self.job_id, exc_info=True)
                continue
            if flag is None:
                self.lost.set()
                return
            if flag:
                self.cancel.set()

    def stop(self) -> None:
        self._done.set()


class JobHooks:
    """The training hooks of one job on this worker."""

    def __init__(
        self,
        settings: Settings,
        store: LocalStore,
        scorers: scores.Scorers | None,
        *,
        job_id: str,
        worker_id: str,
        config: AnyConfig,
        lease: LeaseKeeper,
    ):
        self.settings, self.store, self.scorers = settings, store, scorers
        self.job_id, self.worker_id, self.config, self.lease = job_id, worker_id, config, lease
        self.url = settings.resolved_database_url
        self.scorer: CheckpointScorer | TranslationScorer | None = None
        self.protected: set[int] = set()  # checkpoint steps pruning must keep (the best)
        self.handing_back = False
        # the heartbeat row of the Celery worker whose pool child runs this (worker.sweep)
        self.heartbeat_id = f"{socket.gethostname()}:{os.getppid()}"

    def train_hooks(self) -> TrainHooks:
        return TrainHooks(
            on_start=self.on_start,
            on_progress=self.on_progress,
            should_stop=self.should_stop,
            on_checkpoint=self.on_checkpoint,
            keep_also=self.keep_also,
            on_rollback=self.on_rollback,
            progress_interval=self.settings.progress_interval,
        )

    def phase(self, phase: str) -> None:
        """Say what the job is doing (progress.phase); a view only, so never a reason to stop."""
        try:
            with session_scope(self.url) as s:
                runs.record_phase(s, job_id=self.job_id, worker_id=self.worker_id, phase=phase)
        except Exception:
            log.warning("job %s: could not record its phase %s", self.job_id, phase, exc_info=True)

    def on_start(self, resolved: AnyConfig, dataset: ImageTensorDataset | PairDataset) -> None:
        with session_scope(self.url) as s:
            runs.record_resolved_config(
                s,
                job_id=self.job_id,
                worker_id=self.worker_id,
                config=resolved.model_dump(mode="json"),
            )
        scorers = self.scorers
        if scorers is not None and scorers.enabled:
            self.phase("preparing_scorer")
            device = resolve_device(resolved.device)
            try:
                self.scorer = unless_shutdown(
                    lambda: self._prepare_scorer(scorers, resolved, dataset, device),
                    f"scorer-{self.job_id}",
                )
            except ShutdownFirst:
                # the next worker builds it at once, not after a ttl
                if isinstance(dataset, PairDataset):
                    scorers.give_up_translation(dataset)
                else:
                    scorers.give_up(dataset)
                self._hand_back_now("while its scorer was prepared")
            except Exception:  # scoring is a view of training: never a reason to fail it
                log.exception(
                    "job %s: no scorer for its dataset; checkpoints go unscored", self.job_id
                )
        self.score_left_over()
        if SHUTDOWN.is_set():
            self._hand_back_now("before it trained")
        self.phase("training")

    @staticmethod
    def _prepare_scorer(
        scorers: scores.Scorers,
        resolved: AnyConfig,
        dataset: ImageTensorDataset | PairDataset,
        device: torch.device,
    ) -> CheckpointScorer | TranslationScorer:
        """A noise job's scorer is its dataset's; a translator's is made of its target
        domains' (each built once for the fleet) and its data's held-out split."""
        if is_translation(resolved):
            assert isinstance(dataset, PairDataset)
            return scorers.for_translation(dataset, device)
        assert isinstance(dataset, ImageTensorDataset)
        return scorers.for_dataset(dataset, device)

    def _hand_back_now(self, when: str) -> None:
        log.info("job %s: shutdown %s; handing it back as it is", self.job_id, when)
        self.handing_back = True
        self.phase("handing_back")
        raise HandBack(self.job_id)

    def score_left_over(self) -> None:
        """Score the checkpoints an earlier run of this job left unscored (a shutdown handed
        it back first), oldest first; without a scorer here they are final unscored."""
        with session_scope(self.url) as s:
            rows = scores.unscored_checkpoints(s, job_id=self.job_id)
            s.expunge_all()
        for row in rows:
            if SHUTDOWN.is_set():
                return  # the next worker scores the rest
            if self.scorer is None:
                self._record_scores(row.id, None, None, off=True)
                continue
            log.info(
                "job %s: scoring checkpoint %s (step %d), left unscored by a shutdown",
                self.job_id,
                row.id,
                row.step,
            )
            try:
                path = checkpoints.checkpoint_path(self.store, row)
            except Exception as exc:  # its files are gone: say so rather than wait forever
                self._record_scores(row.id, None, f"{type(exc).__name__}: {exc}")
                continue
            self._score(row.id, path)

    def on_progress(self, p: Progress) -> None:
        with session_scope(self.url) as s:
            runs.record_worker_load(
                s, worker=self.heartbeat_id, job_id=self.job_id, images_per_sec=p.images_per_sec
            )
            runs.record_progress(
                s,
                job_id=self.job_id,
                worker_id=self.worker_id,
                progress=p,
                history_points=self.settings.history_points,
            )

    def idle(self) -> None:
        """The job is over here: the worker trains nothing now (for /metrics)."""
        try:
            with session_scope(self.url) as s:
                runs.record_worker_load(
                    s, worker=self.heartbeat_id, job_id=None, images_per_sec=None
                )
        except Exception:  # telemetry only
            log.warning("could not clear the worker's load", exc_info=True)

    def should_stop(self) -> bool:
        if self.lease.lost.is_set():  # not a cancel: the loop's save-on-stop must not run
            raise LeaseLost(self.job_id)
        if SHUTDOWN.is_set() and not self.handing_back and not self.lease.cancel.is_set():
            self.handing_back = True
            self.phase("handing_back")
        return self.lease.cancel.is_set() or SHUTDOWN.is_set()

    def on_rollback(self, event: Rollback) -> None:
        log.warning(
            "job %s diverged at step %d; rolled back to step %d with learning rates x%g",
            self.job_id,
            event.diverged_at,
            event.resumed_from,
            event.lr_scale,
        )
        with session_scope(self.url) as s:
            runs.record_rollback(
                s,
                job_id=self.job_id,
                worker_id=self.worker_id,
                rollback={**asdict(event), "at": utcnow().isoformat() + "Z"},
            )

    def keep_also(self) -> Collection[int]:
        return self.protected

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        key = self.store.publish_checkpoint(self.job_id, Path(info.path))
        with session_scope(self.url) as s:
            recorded = runs.record_checkpoint(
                s,
                job_id=self.job_id,
                step=info.step,
                key=key,
                size_bytes=info.size_bytes,
                files=info.files,
                losses=info.losses,
                worker_id=self.worker_id,
                scoring=self.scorer is not None,
                write_seconds=info.seconds,
            )
            checkpoint_id = recorded.id if recorded is not None else None
        if checkpoint_id is None:  # the lease went to another worker before we noticed
            self.lease.lost.set()
            raise LeaseLost(self.job_id)
        if self.scorer is not None and SHUTDOWN.is_set():
            log.info(
                "job %s: checkpoint %s left unscored for the worker that resumes the job",
                self.job_id,
                checkpoint_id,
            )
        elif self.scorer is not None:
            self._score(checkpoint_id, Path(info.path))
        with session_scope(self.url) as s:
            self.protected, pruned = scores.prune_rows(
                s, job_id=self.job_id, keep=self.config.keep_checkpoints
            )
        for key in pruned:  # after their rows (the trainer prunes its local copies too)
            self.store.discard(key)

    def _score(self, checkpoint_id: str, path: Path) -> None:
        """Score a checkpoint and record it, unless a shutdown comes first: then the scoring
        is abandoned (its thread dies with the process) and the checkpoint stays unscored."""
        scorer = self.scorer
        assert scorer is not None
        self.phase("scoring")
        result, error = None, None
        try:
            result = unless_shutdown(lambda: scorer.score(path), f"score-{checkpoint_id}")
        except ShutdownFirst:
            log.info(
                "job %s: shutdown; checkpoint %s left unscored for the worker that resumes the job",
                self.job_id,
                checkpoint_id,
            )
            return
        except Exception as exc:
            log.exception("job %s: scoring checkpoint %s failed", self.job_id, checkpoint_id)
            error = f"{type(exc).__name__}: {exc}"
        self._record_scores(checkpoint_id, result, error)
        if not SHUTDOWN.is_set():
            self.phase("training")

    def _record_scores(
        self,
        checkpoint_id: str,
        result: dict[str, Any] | None,
        error: str | None,
        *,
        off: bool = False,
    ) -> None:
        with session_scope(self.url) as s:
            done = scores.record_scores(
                s,
                checkpoint_id=checkpoint_id,
                worker_id=self.worker_id,
                scores=result,
                error=error,
                off=off,
            )
        if done is None:
            self.lease.lost.set()
            raise LeaseLost(self.job_id)
