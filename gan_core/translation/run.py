"""A translation job's kind of run (gan_core.training.RunKind): its data, resolved config,
state, batches and step. The loop, checkpoints, progress, cancel and rollback are the
same as a noise job's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from gan_core.data._base import DatasetError
from gan_core.data.pairs import PairDataset, load_pairs
from gan_core.translation.config import TranslationConfig, UnpairedConfig
from gan_core.translation.state import PairBatcher, TranslationState
from gan_core.translation.steps import translation_step

__all__ = ["TRANSLATION", "resolve_translation_config"]

SPLIT_SEED = 0  # the held-out split is the dataset's, not the job's: the same for every job


def resolve_translation_config(config: TranslationConfig, data: PairDataset) -> TranslationConfig:
    """Fill in each domain's channels; check the data is of the kind the config trains."""
    if data.pairing != config.kind:
        article = "an" if config.kind == "unpaired" else "a"
        raise DatasetError(
            f"dataset: {data.name!r} is {data.pairing}; {article} {config.kind} job needs "
            f"{article} {config.kind} dataset"
        )
    update: dict[str, object] = {"channels_a": data.a.channels, "channels_b": data.b.channels}
    for key, have in (("channels_a", data.a.channels), ("channels_b", data.b.channels)):
        want = getattr(config, key)
        if want is not None and want != have:
            raise DatasetError(f"{key}: config says {want}, the dataset's domain has {have}")
    if isinstance(config, UnpairedConfig):
        same = data.a.channels == data.b.channels
        if config.lambda_identity is None:  # the default: on where the channels allow it
            update["lambda_identity"] = config.IDENTITY_DEFAULT if same else 0.0
        elif config.lambda_identity > 0 and not same:
            raise DatasetError(
                f"lambda_identity: the identity loss needs the same channels in both domains "
                f"(A has {data.a.channels}, B has {data.b.channels}); set it to 0"
            )
    return type(config).model_validate({**config.model_dump(), **update})


class _Translation:
    def load(
        self, config: TranslationConfig, data_dirs: Sequence[str | Path], allow_download: bool
    ) -> PairDataset:
        return load_pairs(
            config.dataset, image_size=config.image_size, seed=SPLIT_SEED, pairing=config.kind
        )

    def resolve(self, config: TranslationConfig, data: PairDataset) -> TranslationConfig:
        sides = {tuple(d.images.shape[2:]) for d in (data.a, data.b)}
        if sides != {(config.image_size, config.image_size)}:
            raise DatasetError(f"image_size: dataset images are {sorted(sides)}")
        return resolve_translation_config(config, data)

    def start(
        self, config: TranslationConfig, device: torch.device, data: PairDataset
    ) -> tuple[TranslationState, PairBatcher]:
        state = TranslationState(config, device)
        return state, PairBatcher(data, config.batch_size, seed=config.seed, device=device)

    def step(self, state: TranslationState, batcher: PairBatcher) -> object:
        return translation_step(state, batcher)


TRANSLATION = _Translation()
