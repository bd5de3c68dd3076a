"""The checks of TrainConfig's arch-resnet fields (blocks_per_stage, group_size, expansion),
kept beside it as gan_core.config_augment keeps augmentation's. Pure: no torch."""

from __future__ import annotations

from typing import Any

# The fields only arch resnet takes (None = the default; gan_core.nets_resnet)
RESNET_FIELDS = ("blocks_per_stage", "group_size", "expansion")


def check_resnet(config: Any) -> None:
    """The resnet fields only with arch resnet; no spectral norm there; widths that split
    into whole groups."""
    if config.arch != "resnet":
        for name in RESNET_FIELDS:
            if getattr(config, name) is not None:
                raise ValueError(f"{name}: only used with arch resnet (arch is {config.arch})")
        return
    if config.spectral_norm:
        # its nets have no normalisation by design, and spectral norm of a fix-up block's
        # zero-initialised last conv divides by zero
        raise ValueError(
            "spectral_norm: not with arch resnet (no normalisation layers; regularise D "
            "with r1_gamma / r2_gamma instead)"
        )
    expansion, group = config.resnet_expansion, config.resnet_group_size
    for net, width in (("g_width", config.g_width), ("d_width", config.d_width)):
        inner = width * expansion
        if inner % group:
            field = "group_size" if config.group_size is not None else net
            raise ValueError(
                f"{field}: {net} x expansion ({width} x {expansion} = {inner}) "
                f"must be a multiple of group_size ({group})"
            )
