"""The checks of TrainConfig's augmentation fields (augment, augment_p, ada_*), kept beside it
so that gan_core.config stays one screenful per concern. Pure: no torch."""

from __future__ import annotations

import contextlib
from typing import Any

AUGMENT_OPS = ("color", "translation", "cutout", "flip", "rot90")  # gan_core.augment's
# The ops augment_p "adaptive" uses when augment names none: the geometric ones safe on most
# data (integer translation, x-flip) and colour; not rot90 (at high p it can teach G a wrong
# orientation) nor cutout (not among ADA's; it hides what D should judge).
ADAPTIVE_DEFAULT_OPS = "translation,flip,color"
ADA_FIELDS = ("ada_target", "ada_interval", "ada_kimg")


def with_default_ops(data: Any) -> Any:
    """A raw config with augment_p "adaptive" and no ops gets the documented default set,
    written into the config (so a stored config says what ran)."""
    if (
        isinstance(data, dict)
        and data.get("augment_p") == "adaptive"
        and data.get("augment") is None
    ):
        return {**data, "augment": ADAPTIVE_DEFAULT_OPS}
    return data


def probability_or_adaptive(value: Any) -> float | str:
    """augment_p's value: a number in [0, 1] (also as text: the dashboard's form sends what was
    typed) or "adaptive"."""
    if isinstance(value, str):
        if value.strip() == "adaptive":
            return "adaptive"
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError("must be a number in [0, 1] or 'adaptive'")
    return float(value)


def known_ops(policy: str | None) -> str | None:
    """augment's value: its ops, checked and without repeats; None when off."""
    if policy is None or policy.strip() in ("", "none", "off"):
        return None
    ops = [op.strip() for op in policy.split(",") if op.strip()]
    unknown = [op for op in ops if op not in AUGMENT_OPS]
    if unknown:
        raise ValueError(f"unknown augment op(s) {unknown}; choose from {list(AUGMENT_OPS)}")
    return ",".join(dict.fromkeys(ops))


def check_augment(config: Any) -> None:
    """The fields together: p needs ops; the ada_* fields need augment_p "adaptive"."""
    if config.augment_p == "adaptive" and not config.augment:
        raise ValueError(
            "augment: augment_p adaptive needs augment ops; leave augment out (or null) "
            f"for the default {ADAPTIVE_DEFAULT_OPS!r}"
        )
    if config.augment_p != 1.0 and not config.augment:
        raise ValueError("augment_p: only used with augment ops (set augment)")
    if config.augment_p != "adaptive":
        for name in ADA_FIELDS:
            if getattr(config, name) != type(config).model_fields[name].default:
                raise ValueError(f"{name}: only used with augment_p adaptive")
