"""Dataset records: built-ins (and whether they are here), uploads, and what a job may train on."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.artifacts.store import ArtifactStore
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.models import FINISHED, Dataset, Job
from app.core.settings import Settings
from gan_core.config import TrainConfig
from gan_core.data import BUILTINS, DatasetInfo, dataset_availability

PAIRED_KINDS = ("paired", "unpaired")  # uploads of pairs / of two domains (gan_core.data.pairs)


def builtins(settings: Settings) -> list[tuple[DatasetInfo, bool, str]]:
    """Each built-in with whether its files are on this machine and where (or where to put them)."""
    out = []
    for name, info in BUILTINS.items():
        available, where = dataset_availability(name, settings.dataset_dirs)
        out.append((info, available or settings.allow_download, where))
    return out


def list_uploads(session: Session, *, owner_id: str | None = None) -> list[Dataset]:
    query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc())
    if owner_id is not None:
        query = query.where(Dataset.owner_id == owner_id)
    return list(session.scalars(query))


def get_upload(session: Session, *, dataset_id: str, owner_id: str | None = None) -> Dataset:
    ds = session.get(Dataset, dataset_id)
    if ds is None or (owner_id is not None and ds.owner_id != owner_id):
        raise NotFound(f"dataset {dataset_id} not found")
    return ds


def delete_upload(
    session: Session, store: ArtifactStore, *, dataset_id: str, owner_id: str | None = None
) -> None:
    """Delete an upload, record first, then files; 409 while an unfinished job uses it."""
    ds = get_upload(session, dataset_id=dataset_id, owner_id=owner_id)
    users = session.scalars(
        select(Job.id).where(
            Job.dataset_id == ds.id, Job.status.not_in([s.value for s in FINISHED])
        )
    ).all()
    if users:
        raise Conflict(f"dataset {dataset_id} is used by unfinished job(s) {sorted(users)}")
    # Finished jobs keep their checkpoints; they just lose the link to the data.
    for job in session.scalars(select(Job).where(Job.dataset_id == ds.id)):
        job.dataset_id = None
    session.delete(ds)
    session.commit()
    store.discard(f"datasets/{ds.id}")


def check_training_dataset(
    session: Session, settings: Settings, config: TrainConfig, *, owner_id: str | None = None
) -> tuple[TrainConfig, Dataset | None]:
    """Check that a job's dataset exists here and fits its config; returns (config, upload or None)."""
    name = config.dataset
    if name in BUILTINS and BUILTINS[name].pairing:
        raise _no_translation_jobs(f"built-in dataset {name!r}", BUILTINS[name].pairing)
    if name in BUILTINS:
        available, where = dataset_availability(name, settings.dataset_dirs)
        if not available and not settings.allow_download:
            raise InvalidInput(
                f"built-in dataset {name!r} is not on this server: {where}", field="config.dataset"
            )
        # Every built-in holds far more images than the largest batch_size (shapes 20,000,
        # the others 50,000-60,000; batch_size <= 4,096), so there is no size to check here.
        return config, None
    if not name.startswith("ds_"):
        # Server-side paths ('npz:/...', 'image-folder:/...') are for the CLI, never for HTTP
        # callers: they would let a request read any file the server can.
        raise InvalidInput(
            f"dataset must be a built-in ({', '.join(BUILTINS)}) or an uploaded dataset id (ds_...)",
            field="config.dataset",
        )
    try:
        ds = get_upload(session, dataset_id=name, owner_id=owner_id)
    except NotFound as exc:
        raise InvalidInput(f"no uploaded dataset {name}", field="config.dataset") from exc
    if ds.kind in PAIRED_KINDS:
        raise _no_translation_jobs(f"dataset {name}", ds.kind)
    if config.batch_size > ds.num_images:  # the worker's batcher would refuse it seconds later
        raise InvalidInput(
            f"batch_size {config.batch_size} is larger than dataset {name}, which has "
            f"{ds.num_images} images: use batch_size <= {ds.num_images}, or upload more images",
            field="config.batch_size",
        )
    if config.conditional and ds.num_classes is None:
        raise InvalidInput(
            f"dataset {name} has no labels (upload class subfolders or y)",
            field="config.conditional",
        )
    return config, ds


def _no_translation_jobs(what: str, pairing: str | None) -> InvalidInput:
    holds = "pairs of images (A → B)" if pairing == "paired" else "images of two domains (A, B)"
    return InvalidInput(
        f"{what} holds {holds}: it is for image-to-image translation, and translation jobs "
        "are not available yet; jobs train from noise on a dataset of images",
        field="config.dataset",
    )
