"""Presets: named values for a noise job's config fields, so that a user picks a recipe by one
name (``"preset": "resnet"``) rather than by a dozen fields.

A preset is expanded before validation: the fields it names are written into the config
unless the request set them itself (an explicit field wins, even one equal to its default),
and the config keeps ``preset`` beside them. So a stored config (the job's, a checkpoint's)
says both what was asked and every value that ran, and validating it again changes nothing.
Pure: no torch. docs/configuration.md#presets lists each preset's fields (a test holds the two
together).
"""

from __future__ import annotations

from typing import Any, Literal

PresetName = Literal["dcgan", "resnet", "resnet-small-data"]

# R3GAN's objective (Huang et al. 2024): relativistic pairing loss with zero-centred R1 and R2,
# lazily every 4th D update (StyleGAN2) to keep a CPU step's cost down. gamma 0.1 is the value
# benchmarks/recipes.py ran ("rpgan_r1r2") for [-1, 1] images at 28-64 px; it is not tuned.
# Adam without momentum (0.0, 0.99) and the EMA generator, also R3GAN's, are the defaults.
_RESNET: dict[str, Any] = {
    "arch": "resnet",
    "loss": "rpgan",
    "r1_gamma": 0.1,
    "r2_gamma": 0.1,
    "reg_every": 4,
}

PRESETS: dict[str, dict[str, Any]] = {
    # today's default, named: it sets nothing. (Were the defaults to change, this entry would
    # take the fields that keep it the DCGAN recipe it names.)
    "dcgan": {},
    "resnet": _RESNET,
    # resnet with adaptive augmentation (StyleGAN2-ADA) for a few hundred to a few thousand
    # images: p starts at 0 and rises only as far as D overfits, over the geometric ops that
    # leak least (integer translation, x-flip) and colour
    "resnet-small-data": {**_RESNET, "augment": "translation,flip,color", "augment_p": "adaptive"},
}


def expand_preset(data: Any) -> Any:
    """A raw config with a known ``preset``: the preset's fields, then the config's own on top.
    Anything else passes unchanged (an unknown name is refused by the field's own check)."""
    if isinstance(data, dict):
        name = data.get("preset")
        if isinstance(name, str) and name in PRESETS:
            return {**PRESETS[name], **data}
    return data
