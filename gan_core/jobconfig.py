"""A job's config, whichever kind of model it trains: the union of the kinds on ``kind``.

- ``"noise"`` (the default, and what a config without ``kind`` is): noise (and a class) to
  an image, gan_core.config.TrainConfig;
- ``"paired"``: pix2pix, A → B from pairs, gan_core.translation.config.PairedConfig;
- ``"unpaired"``: CycleGAN, A ↔ B from two domains, UnpairedConfig.

A pydantic discriminated union, so that the schema, the dashboard's form and every error
show each kind only its own fields (an error names ``paired.lambda_l1``, say, not a field
of every kind).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter

from gan_core.config import TrainConfig
from gan_core.translation.config import PairedConfig, TranslationConfig, UnpairedConfig

__all__ = ["KINDS", "AnyConfig", "JobConfig", "config_kind", "is_translation", "parse_config"]

KINDS = ("noise", "paired", "unpaired")
AnyConfig = TrainConfig | PairedConfig | UnpairedConfig


def config_kind(value: Any) -> str | None:
    """The kind a config (a dict or a model) says it is; no kind means noise."""
    if isinstance(value, dict):
        kind = value.get("kind", "noise")
        return kind if isinstance(kind, str) and kind in KINDS else None
    return str(getattr(value, "kind", "noise"))


JobConfig = Annotated[
    Annotated[TrainConfig, Tag("noise")]
    | Annotated[PairedConfig, Tag("paired")]
    | Annotated[UnpairedConfig, Tag("unpaired")],
    Discriminator(
        config_kind,
        custom_error_type="invalid_kind",
        custom_error_message="kind: choose one of 'noise' (the default), 'paired', 'unpaired'",
    ),
]
_ADAPTER: TypeAdapter[AnyConfig] = TypeAdapter(JobConfig)


def parse_config(data: Any) -> AnyConfig:
    """Validate a job config of any kind (raises pydantic.ValidationError)."""
    if isinstance(data, TrainConfig | PairedConfig | UnpairedConfig):
        return data
    return _ADAPTER.validate_python(data)


def is_translation(config: AnyConfig) -> bool:
    return isinstance(config, TranslationConfig)
