"""``precision: "auto"``: the precision a run trains in, decided where the device is known.

``auto`` is bf16 where the device runs it natively — CUDA with bf16 (Ampere and later); a CPU
with AVX-512 BF16 or AMX (oneDNN's bf16 kernels) for the nets measured faster or no slower
there on a quiet machine (benchmarks/train_throughput.py, translation_throughput.py: the
default DCGAN job 1.9x the eager fp32 loop at two threads, 2.4x at one; the resnet nets
1.31x; CycleGAN 1.15x, pix2pix 0.97x) — and fp32 elsewhere: emulated bf16 is slower than
fp32, not faster, and the MLP baseline was not measured. (Under heavy load, bf16 at two
threads on a 2-core host ran several times slower for every net: a loaded worker does better
with one thread or fp32.) fp16 is only ever an explicit choice. The engine resolves it
when a run starts (gan_core.training.train), so the stored config, every checkpoint and the
job the service shows carry the concrete precision, and a resume keeps it.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import torch

from gan_core.inference import cpu_has_fast_bf16

Concrete = Literal["fp32", "bf16", "fp16"]
C = TypeVar("C")


# The nets measured faster (or no slower) in bf16 than fp32 on a CPU with native bf16 (above)
CPU_BF16_NETS = frozenset({"dcgan", "resnet", "translation"})


def auto_precision(
    device_type: str, *, cuda_bf16_supported: bool, cpu_fast_bf16: bool, nets: str = "dcgan"
) -> Literal["fp32", "bf16"]:
    """What ``auto`` means on a device of this type, given the facts about it, for ``nets``
    (a noise job's arch, or "translation")."""
    if device_type == "cuda" and cuda_bf16_supported:
        return "bf16"
    if device_type == "cpu" and cpu_fast_bf16 and nets in CPU_BF16_NETS:
        return "bf16"
    return "fp32"


def nets_of(config: Any) -> str:
    """The family of nets a config trains, as auto_precision takes it."""
    return str(config.arch) if config.kind == "noise" else "translation"


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA device computes in bf16 natively (not emulated)."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch, which counted only native support
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(wanted: str, device: torch.device, nets: str = "dcgan") -> Concrete:
    """``wanted`` as the precision a run of ``nets`` trains in on ``device``: ``auto`` from
    the machine's facts, anything else as given."""
    if wanted != "auto":
        if wanted not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {wanted!r}")
        return wanted  # type: ignore[return-value]
    return auto_precision(
        device.type,
        cuda_bf16_supported=device.type == "cuda" and cuda_has_native_bf16(),
        cpu_fast_bf16=device.type == "cpu" and cpu_has_fast_bf16(),
        nets=nets,
    )


def with_resolved_precision(config: C, device: torch.device) -> C:
    """``config`` (any job kind) with its precision resolved for ``device``."""
    cfg: Any = config
    concrete = resolve_precision(cfg.precision, device, nets_of(cfg))
    return cfg if concrete == cfg.precision else cfg.model_copy(update={"precision": concrete})


__all__ = [
    "CPU_BF16_NETS",
    "auto_precision",
    "cuda_has_native_bf16",
    "nets_of",
    "resolve_precision",
    "with_resolved_precision",
]
