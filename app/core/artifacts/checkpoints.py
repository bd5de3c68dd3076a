"""Checkpoint records of a job, resolved by id, 'latest' or 'best'."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.artifacts.store import ArtifactStore
from app.core.errors import Conflict, NotFound
from app.core.jobs.records import get_job
from app.core.models import Checkpoint, Job
from gan_core.metrics.translation import selection_key


def list_checkpoints(
    session: Session, *, job_id: str, owner_id: str | None = None
) -> list[Checkpoint]:
    """A job's stored checkpoints (not the pruned ones), newest first."""
    get_job(session, job_id=job_id, owner_id=owner_id)
    return list(
        session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.pruned_at.is_(None))
            .order_by(Checkpoint.step.desc())
        )
    )


def best_stored(session: Session, job: Job) -> Checkpoint | None:
    """The job's best stored checkpoint: the lowest FD of its better generator (an unpaired
    translator's: the lowest ``selection_key``, both directions' FD over their floors), ties
    to the newer; None while none is scored."""
    scored = (
        select(Checkpoint)
        .where(
            Checkpoint.job_id == job.id,
            Checkpoint.best_fd.is_not(None),
            Checkpoint.pruned_at.is_(None),
        )
        .order_by(Checkpoint.best_fd.asc(), Checkpoint.step.desc())
    )
    if (job.config or {}).get("kind") != "unpaired":
        return session.scalar(scored.limit(1))
    # the key is in the scores (the stored ones: at most keep_checkpoints and a few kept)
    return min(
        session.scalars(scored),
        key=lambda c: (selection_key(c.scores or {}, (c.scores or {}).get("baseline")), -c.step),
        default=None,
    )


def get_checkpoint(
    session: Session, *, job_id: str, ref: str, owner_id: str | None = None
) -> Checkpoint:
    """A stored checkpoint by id; 'latest' (the highest step); or 'best' (``best_stored``)."""
    job = get_job(session, job_id=job_id, owner_id=owner_id)
    stored = select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.pruned_at.is_(None))
    if ref == "latest":
        ckpt = session.scalar(stored.order_by(Checkpoint.step.desc()).limit(1))
        if ckpt is None:
            raise NotFound(f"job {job_id} has no checkpoint yet")
        return ckpt
    if ref == "best":
        ckpt = best_stored(session, job)
        if ckpt is None:
            raise NotFound(
                f"job {job_id} has no scored checkpoint yet (scoring may be off: "
                "GANFORGE_SCORE_SAMPLES); use 'latest'"
            )
        return ckpt
    ckpt = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.id == ref)
    )
    if ckpt is None:
        raise NotFound(f"checkpoint {ref} of job {job_id} not found")
    if ckpt.pruned_at is not None:
        raise NotFound(
            f"checkpoint {ref} of job {job_id} was pruned (keep_checkpoints); its "
            "scores remain in the job's metrics"
        )
    return ckpt


def checkpoint_path(store: ArtifactStore, ckpt: Checkpoint) -> Path:
    """The local directory of a recorded checkpoint; Conflict if its files are gone."""
    path = store.local_checkpoint(ckpt.path, content_hash(ckpt))
    if not path.is_dir():
        raise Conflict(f"checkpoint {ckpt.id} is recorded but its files are missing from the store")
    return path


def content_hash(ckpt: Checkpoint) -> str:
    """The generator file's sha256: identifies the weights a sample comes from."""
    return str((ckpt.files.get("generator.safetensors") or {}).get("sha256", ckpt.id))


def checkpoint_zip(store: ArtifactStore, ckpt: Checkpoint) -> bytes:
    """The checkpoint's files (safetensors weights + meta.json) as one zip."""
    path = checkpoint_path(store, ckpt)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # weights do not compress
        for name in sorted(ckpt.files) + ["meta.json"]:
            zf.write(path / name, arcname=f"{ckpt.job_id}-step{ckpt.step}/{name}")
    return buf.getvalue()
