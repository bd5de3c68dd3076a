"""Runs one folder translation: claim it, translate its images batch by batch into a zip of
PNGs, record the end (app.core.serving.folder_translations holds the records).

The translator is loaded once; images are decoded and translated ``BATCH`` at a time, each
the way POST .../translate does it (the upload caps read from the header, the same
centre-crop and resize, the same PNG encoding), so on the same device an image gives the
same bytes either way. An image that cannot be read, is over the per-image pixel cap or has
the wrong channels is listed in ``report.json`` in the zip (and on the resource) and the
run goes on. Progress is written about every ``progress_interval`` seconds, with the lease;
a cancel is seen between batches (the partial result is dropped). A shutdown (SIGTERM)
hands the translation back to the queue, and the next worker starts it over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch

from app.core.artifacts import checkpoints
from app.core.artifacts.selection import get_store
from app.core.artifacts.store import LocalStore
from app.core.db import session_scope
from app.core.errors import DomainError
from app.core.jobs.queue import JobQueue
from app.core.models import Checkpoint, JobStatus
from app.core.serving import folder_runs
from app.core.serving import folder_translations as records
from app.core.serving.folder_inputs import IMAGES, FolderInputs, output_name
from app.core.serving.image_input import ImageLimits, decode, open_image
from app.core.serving.translating import image_png
from app.core.settings import Settings, get_settings
from gan_core.checkpoint import CheckpointError
from gan_core.data import DatasetError
from gan_core.training import resolve_device
from gan_core.translation.inference import load_translator, prepare_image, translate
from worker.hooks import SHUTDOWN

log = logging.getLogger("ganforge.worker")
BATCH = 16  # images decoded and translated at once: the unit of progress and cancel checks


class Stopped(Exception):
    """The run was asked to stop: ``why`` is "cancel", "shutdown" or "lost" (the lease)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class Lease(threading.Thread):
    """Renews the translation's lease in the background, writing the latest progress, and
    notices a cancel or a lost lease."""

    def __init__(self, settings: Settings, translation_id: str, worker_id: str):
        super().__init__(daemon=True, name=f"lease-{translation_id}")
        self.url, self.id, self.worker_id = (
            settings.resolved_database_url,
            translation_id,
            worker_id,
        )
        self.lease_seconds = settings.lease_seconds
        self.interval = max(0.05, min(settings.progress_interval, settings.lease_seconds / 4))
        self.progress: tuple[int, int] | None = None  # (done, failed), set by the run
        self.cancel, self.lost, self._done = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        written = None
        while not self._done.wait(self.interval):
            progress = self.progress
            try:
                with session_scope(self.url) as s:
                    flag = folder_runs.renew(
                        s,
                        translation_id=self.id,
                        worker_id=self.worker_id,
                        lease_seconds=self.lease_seconds,
                        done=progress[0] if progress != written and progress else None,
                        failed=progress[1] if progress != written and progress else None,
                    )
            except Exception:  # the database briefly away: keep going, try again
                log.warning("could not renew the lease of %s", self.id, exc_info=True)
                continue
            written = progress
            if flag is None:
                self.lost.set()
                return
            if flag:
                self.cancel.set()

    def stop(self) -> None:
        self._done.set()

    def check(self) -> None:
        if self.lost.is_set():
            raise Stopped("lost")
        if self.cancel.is_set():
            raise Stopped("cancel")
        if SHUTDOWN.is_set():
            raise Stopped("shutdown")


def _prepare(path: Path, limits: ImageLimits, size: int, channels: int) -> torch.Tensor:
    """One input image as POST .../translate prepares it; DomainError or DatasetError if not."""
    opened = open_image(path.read_bytes(), limits)
    return prepare_image(decode(opened), size, channels)


def translate_folder(
    model: torch.nn.Module,
    inputs: FolderInputs,
    folder: Path,
    out: zipfile.ZipFile,
    limits: ImageLimits,
    lease: Lease,
) -> dict[str, Any]:
    """Translate every input image into ``out``; the report (also written as report.json)."""
    attrs = vars(model)
    size, channels = attrs["config"].image_size, int(attrs["in_channels"])
    failed: list[dict[str, Any]] = []
    translated = 0
    for start in range(0, len(inputs.images), BATCH):
        lease.check()
        names, batch = [], []
        for name in inputs.images[start : start + BATCH]:
            try:
                batch.append(_prepare(folder / IMAGES / name, limits, size, channels))
                names.append(name)
            except (DomainError, DatasetError) as exc:
                # the status POST .../translate answers for this image: 413 past a cap, else 422
                if isinstance(exc, DomainError):
                    detail, status = exc.detail, exc.status
                else:
                    detail, status = str(exc), 422
                failed.append({"name": name, "error": detail, "status": status})
        if batch:
            for name, image in zip(names, translate(model, torch.stack(batch)), strict=True):
                out.writestr(output_name(name), image_png(image))
            translated += len(batch)
        lease.progress = (translated + len(failed), len(failed))
    lease.check()
    report = {"translated": translated, "failed": failed, "skipped": inputs.skipped}
    out.writestr("report.json", json.dumps(report, indent=1))
    return report


def _hand_back(
    settings: Settings, translation_id: str, worker_id: str, queue: JobQueue | None
) -> None:
    with session_scope(settings.resolved_database_url) as s:
        if not folder_runs.release(s, translation_id=translation_id, worker_id=worker_id):
            return
        try:
            if queue is None:
                raise RuntimeError("no queue to send to")
            queue.send_translation(translation_id)
        except Exception:
            folder_runs.mark_unsent(s, translation_id=translation_id)  # the next sweep sends it
    log.warning("translation %s handed back to the queue for a shutdown", translation_id)


def run_translation(
    translation_id: str,
    *,
    settings: Settings | None = None,
    worker_id: str | None = None,
    queue: JobQueue | None = None,
) -> str:
    """Translate one folder to its end; the final status, 'skipped' if not ours to run,
    'released' if a shutdown handed it back, 'lost' if another worker took it."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    store: LocalStore = get_store(settings.resolved_store_dir, settings.store_url)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    if SHUTDOWN.is_set() and queue is not None:  # a message taken while shutting down
        queue.send_translation(translation_id)
        return "deferred"
    with session_scope(url) as s:
        row = folder_runs.claim(
            s,
            translation_id=translation_id,
            worker_id=worker_id,
            lease_seconds=settings.lease_seconds,
        )
        if row is None:
            log.info(
                "translation %s is not claimable (finished, canceled or running)", translation_id
            )
            return "skipped"
        ckpt = s.get(Checkpoint, row.checkpoint_id)
        if ckpt is not None:
            s.expunge(ckpt)
        direction, ema = row.direction, row.ema
    lease = Lease(settings, translation_id, worker_id)
    lease.start()
    status, error, report, size = JobStatus.failed, None, None, None
    key = records.result_key(translation_id)
    final = store.cache_path(key)
    part = final / f".{records.RESULT_FILE}.{uuid.uuid4().hex[:8]}.part"  # renamed when whole
    try:
        if ckpt is None or ckpt.pruned_at is not None:
            raise CheckpointError(f"checkpoint {row.checkpoint_id} was deleted with its job")
        path = checkpoints.checkpoint_path(store, ckpt)
        model = load_translator(path, direction, ema=ema, device=resolve_device("auto"))
        folder = store.local_path(records.inputs_key(translation_id))
        inputs = FolderInputs.read(folder)
        final.mkdir(parents=True, exist_ok=True)
        for left in final.glob(".*.part"):  # of a run whose worker died: not to be published
            left.unlink(missing_ok=True)
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as out:  # PNGs do not compress
            report = translate_folder(model, inputs, folder, out, ImageLimits.of(settings), lease)
        part.replace(final / records.RESULT_FILE)
        store.publish(key)
        status, size = JobStatus.succeeded, (final / records.RESULT_FILE).stat().st_size
    except Stopped as stop:
        status = JobStatus.canceled
        if stop.why == "lost":
            lease.lost.set()
    except (CheckpointError, DomainError, DatasetError, ValueError) as exc:
        error = exc.detail if isinstance(exc, DomainError) else str(exc)
    except OSError as exc:
        error = f"could not read or write the artifact store: {exc}"
    except Exception as exc:
        log.exception("translation %s crashed", translation_id)
        error = f"{type(exc).__name__}: {exc}"
    finally:
        lease.stop()
        part.unlink(missing_ok=True)
    if lease.lost.is_set():
        log.warning("translation %s was taken over by another worker", translation_id)
        return "lost"
    if status == JobStatus.canceled and SHUTDOWN.is_set() and not lease.cancel.is_set():
        _hand_back(settings, translation_id, worker_id, queue)
        return "released"
    with session_scope(url) as s:
        folder_runs.finish(
            s,
            translation_id=translation_id,
            worker_id=worker_id,
            status=status,
            error=error,
            report=report,
            result_bytes=size,
        )
    log.info("translation %s ended %s%s", translation_id, status, f": {error}" if error else "")
    return str(status)
