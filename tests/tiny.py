"""The one tiny training config the tests share: a DCGAN on 16 px `shapes` that trains in
well under a second. Tests override what they need: ``tiny(steps=4)``."""

from __future__ import annotations

from typing import Any

TINY: dict[str, Any] = {
    "dataset": "shapes",
    "image_size": 16,
    "g_width": 8,
    "d_width": 8,
    "batch_size": 8,
    "latent_dim": 16,
    # enough steps for BatchNorm's running stats to settle, so eval-mode samples are not flat
    "steps": 24,
    "checkpoint_every": 12,
}


def tiny(**overrides: Any) -> dict[str, Any]:
    """TINY with some fields changed."""
    return {**TINY, **overrides}
