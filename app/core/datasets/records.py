"""Dataset records: built-ins (and whether they are here), uploads, and what a job may train on."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.artifacts.store import ArtifactStore
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.models import FINISHED, Dataset, Job
from app.core.settings import Settings
from gan_core.data import BUILTINS, DatasetInfo, dataset_availability
from gan_core.jobconfig import AnyConfig
from gan_core.translation.config import TranslationConfig

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
    session: Session, settings: Settings, config: AnyConfig, *, owner_id: str | None = None
) -> tuple[AnyConfig, Dataset | None]:
    """Check that a job's dataset exists here and fits its config's kind; returns (config,
    upload or None). A noise job trains on images; a paired job on pairs (the built-in
    'shapes-edges' or a 'paired' upload), an unpaired one on two domains (an 'unpaired' upload)."""
    name = config.dataset
    if name in BUILTINS:
        pairing = BUILTINS[name].pairing
        if pairing != _wants(config):
            raise _wrong_kind(config, f"built-in dataset {name!r}", pairing)
        available, where = dataset_availability(name, settings.dataset_dirs)
        if not available and not settings.allow_download:
            raise InvalidInput(
                f"built-in dataset {name!r} is not on this server: {where}", field="config.dataset"
            )
        # Every built-in holds far more images (or pairs) than the largest batch_size (shapes
        # 20,000, shapes-edges 3,800 pairs to train on, the others 50,000-60,000; batch_size
        # <= 4,096 for images, <= 1,024 for pairs), so there is no size to check here.
        return config, None
    if not name.startswith("ds_"):
        # Server-side paths ('npz:/...', 'image-folder:/...', 'pairs:/...') are for the CLI,
        # never for HTTP callers: they would let a request read any file the server can.
        builtins_ = [n for n, info in BUILTINS.items() if info.pairing == _wants(config)]
        raise InvalidInput(
            f"dataset must be a built-in ({', '.join(builtins_) or 'none of this kind'}) or an "
            "uploaded dataset id (ds_...)",
            field="config.dataset",
        )
    try:
        ds = get_upload(session, dataset_id=name, owner_id=owner_id)
    except NotFound as exc:
        raise InvalidInput(f"no uploaded dataset {name}", field="config.dataset") from exc
    pairing = ds.kind if ds.kind in PAIRED_KINDS else None
    if pairing != _wants(config):
        raise _wrong_kind(config, f"dataset {name}", pairing)
    if isinstance(config, TranslationConfig):
        _check_pairs_batch(config, ds)
        return config, ds
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


def _wants(config: AnyConfig) -> str | None:
    """The pairing of the data a config trains on: None (images), 'paired' or 'unpaired'."""
    return config.kind if isinstance(config, TranslationConfig) else None


def _wrong_kind(config: AnyConfig, what: str, pairing: str | None) -> InvalidInput:
    holds = {
        None: "images (for noise-to-image jobs)",
        "paired": "pairs of images, A -> B (for kind 'paired')",
        "unpaired": "images of two domains, A and B (for kind 'unpaired')",
    }[pairing]
    wants = _wants(config)
    job = {
        None: "a noise-to-image job",
        "paired": "a paired translation job",
        "unpaired": "an unpaired translation job",
    }[wants]
    return InvalidInput(
        f"{what} holds {holds}; {job} needs {_needs(wants)}",
        field="config.dataset",
    )


def _needs(pairing: str | None) -> str:
    return {
        None: "a dataset of images",
        "paired": "a dataset of pairs (shapes-edges, or an upload of A/ + B/ or AB/)",
        "unpaired": "a dataset of two domains (an upload of trainA/ + trainB/)",
    }[pairing]


def _check_pairs_batch(config: TranslationConfig, ds: Dataset) -> None:
    """batch_size must fit the training split (what is left after the held-out images) of
    each domain, as the worker's batcher would find seconds later."""
    domains = ds.domains or {}
    counts = {
        key: int(d.get("num_images", 0)) - int(d.get("val_images", 0)) for key, d in domains.items()
    }
    if config.kind == "paired":  # a pair is one item; both sides count the same
        counts = {"pairs": min(counts.values())} if counts else {}
    if not counts:
        return
    side, fewest = min(counts.items(), key=lambda kv: kv[1])
    if config.batch_size > fewest:
        what = "pairs" if side == "pairs" else f"images in domain {side}"
        raise InvalidInput(
            f"batch_size {config.batch_size} is larger than dataset {ds.id}'s training split, "
            f"which has {fewest} {what} (the held-out validation images excluded): use "
            f"batch_size <= {fewest}, or upload more",
            field="config.batch_size",
        )
