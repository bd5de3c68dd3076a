"""The data a job trains on, read from the store: an upload's local path, and a translation
job's pairs split as training splits them (the worker trains on them, the grids show their
held-out part)."""

from __future__ import annotations

from pathlib import Path

from app.core.artifacts.store import ArtifactStore
from app.core.models import Dataset
from gan_core.data import DatasetError
from gan_core.data.pairs import PairDataset, load_pair_folder, load_pairs
from gan_core.translation.config import TranslationConfig
from gan_core.translation.run import SPLIT_SEED


def upload_path(store: ArtifactStore, upload: Dataset) -> Path:
    """The local path of an uploaded dataset's data (an .npz, an image folder, or a folder of
    A/ + B/, trainA/ + trainB/ or AB/), for the worker that trains on it and the grids."""
    root = f"datasets/{upload.id}"  # published as a whole; upload.path is inside it
    return store.local_path(root) / upload.path.removeprefix(root + "/")


def load_job_pairs(
    store: ArtifactStore, config: TranslationConfig, upload: Dataset | None
) -> PairDataset:
    """A translation job's whole dataset, split as training splits it: a built-in of pairs
    (config.dataset), or the job's uploaded dataset (``upload``) read from the store."""
    if upload is None:
        return load_pairs(
            config.dataset, image_size=config.image_size, seed=SPLIT_SEED, pairing=config.kind
        )
    try:
        return load_pair_folder(
            upload_path(store, upload),
            config.image_size,
            pairing=upload.kind,
            seed=SPLIT_SEED,
            name=upload.id,
        )
    except OSError as exc:
        raise DatasetError(f"uploaded dataset {upload.id} cannot be read: {exc}") from exc
