"""``precision: "auto"``: the precision a run trains in, decided where the device is known.

``auto`` is bf16 where the device runs it natively — CUDA with bf16 (Ampere and later), a CPU
with AVX-512 BF16 or AMX (oneDNN's bf16 kernels; benchmarks/train_throughput.py measured the
engine in bf16 at 1.66x the eager fp32 loop there) — and fp32 elsewhere: emulated bf16 is
slower than fp32, not faster. fp16 is only ever an explicit choice. The engine resolves it
when a run starts (gan_core.training.train), so the stored config, every checkpoint and the
job the service shows carry the concrete precision, and a resume keeps it.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import torch

from gan_core.inference import cpu_has_fast_bf16

Concrete = Literal["fp32", "bf16", "fp16"]
C = TypeVar("C")


def auto_precision(
    device_type: str, *, cuda_bf16_supported: bool, cpu_fast_bf16: bool
) -> Literal["fp32", "bf16"]:
    """What ``auto`` means on a device of this type, given the facts about it."""
    if device_type == "cuda" and cuda_bf16_supported:
        return "bf16"
    if device_type == "cpu" and cpu_fast_bf16:
        return "bf16"
    return "fp32"


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA device computes in bf16 natively (not emulated)."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch, which counted only native support
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(wanted: str, device: torch.device) -> Concrete:
    """``wanted`` as the precision this run trains in on ``device``: ``auto`` from the
    machine's facts, anything else as given."""
    if wanted != "auto":
        if wanted not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {wanted!r}")
        return wanted  # type: ignore[return-value]
    return auto_precision(
        device.type,
        cuda_bf16_supported=device.type == "cuda" and cuda_has_native_bf16(),
        cpu_fast_bf16=device.type == "cpu" and cpu_has_fast_bf16(),
    )


def with_resolved_precision(config: C, device: torch.device) -> C:
    """``config`` (any job kind) with its precision resolved for ``device``."""
    cfg: Any = config
    concrete = resolve_precision(cfg.precision, device)
    return cfg if concrete == cfg.precision else cfg.model_copy(update={"precision": concrete})


__all__ = ["auto_precision", "cuda_has_native_bf16", "resolve_precision", "with_resolved_precision"]
