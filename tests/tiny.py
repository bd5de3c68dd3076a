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


# The tiny configs checkpoint every few steps, under the service's floor and past its cap on
# checkpoints per job (GANFORGE_MIN_CHECKPOINT_EVERY, GANFORGE_MAX_CHECKPOINTS_PER_JOB): the
# suite serves them with these limits (tests/conftest.py sets them in the environment; the
# embedded Stack passes them on). Tests of the limits themselves set their own.
TEST_LIMITS: dict[str, str] = {
    "GANFORGE_MIN_CHECKPOINT_EVERY": "1",
    "GANFORGE_MAX_CHECKPOINTS_PER_JOB": "10000000",
}
