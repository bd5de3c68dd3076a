"""A generator prepared for serving: folded, laid out and run in the precision the CPU is
fastest at, within a stated tolerance of fp32.

``prepare(G, mode)`` returns a copy of an eval-mode generator with each BatchNorm folded into
the Linear / (transposed) convolution before it (one op less per layer, exact up to float
rounding), in channels_last memory layout for the convolutions and, in ``bf16`` mode, with
bfloat16 weights (oneDNN's bf16 kernels: AVX512-BF16 / AMX on recent x86; stored in bf16
rather than cast under autocast on every call, which measured ~8% slower); ``run`` feeds it
under ``torch.inference_mode`` and returns float32 images as ``generate`` does.

Modes: ``fp32`` (folded, channels_last, inference mode: the same images as plain eval up to
float rounding) and ``bf16``. ``resolve_mode("auto", device)`` picks ``bf16`` on a CPU that
has native bf16 dot products and runs them faster, and ``fp32`` everywhere else. The same inputs give the same
bytes in a mode on a given machine; a mode is part of a render's identity (the API's ETag).
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from gan_core.nets import Generator

Mode = Literal["fp32", "bf16"]
MODES: tuple[Mode, ...] = ("fp32", "bf16")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix/conv kernels natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
    except (AttributeError, RuntimeError):  # a build without oneDNN, another architecture
        return False


@functools.cache
def bf16_pays() -> bool:
    """Whether bf16 runs a DCGAN-sized transposed convolution at least 1.2x faster than fp32
    on this CPU, timed once per process (a few ms where bf16 is native).

    The CPU's flags say what it has, not what this build of torch does with it: where oneDNN
    falls back to emulated bf16 kernels, bf16 measured 3-50x *slower* than fp32.
    """
    layer = nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(16, 128, 14, 14).contiguous(memory_format=torch.channels_last)

    def best(bf16: bool) -> float:
        dtype = torch.bfloat16 if bf16 else torch.float32
        conv, inp = layer.to(dtype), x.to(dtype)
        times = []
        with torch.inference_mode():
            for _ in range(4):
                t0 = time.perf_counter()
                conv(inp)
                times.append(time.perf_counter() - t0)
        return min(times[1:])

    return best(True) * 1.2 <= best(False)


def resolve_mode(wanted: str, device: torch.device | str = "cpu") -> Mode:
    """``auto`` -> the fastest mode for ``device``; ``fp32`` / ``bf16`` as given.

    ``auto`` is ``bf16`` only on a CPU that reports native bf16 *and* runs it faster
    (``bf16_pays``); ``fp32`` everywhere else, CUDA included (where serving is not the
    bottleneck and fp32 keeps the images the reference ones).
    """
    if wanted == "auto":
        cpu = torch.device(device).type == "cpu"
        return "bf16" if cpu and cpu_has_fast_bf16() and bf16_pays() else "fp32"
    if wanted not in MODES:
        raise ValueError(f"precision must be auto, fp32 or bf16, got {wanted!r}")
    return wanted


def _fold(seq: nn.Sequential) -> None:
    """Fold each (Linear | Conv2d | ConvTranspose2d, BatchNorm) pair of ``seq`` in place, and
    each (BatchNorm1d, Linear) pair (the MLP generator normalises after its activation)."""
    mods = list(seq)
    for i in range(len(mods) - 1):
        layer, bn = mods[i], mods[i + 1]
        if not isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d) or not bn.track_running_stats:
            continue
        if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused: nn.Module = fuse_linear_bn_eval(layer, bn)
        elif isinstance(layer, nn.Conv2d | nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(layer, bn, transpose=isinstance(layer, nn.ConvTranspose2d))
        else:
            continue
        seq[i], seq[i + 1] = fused, nn.Identity()
        mods[i], mods[i + 1] = fused, seq[i + 1]
    for i in range(len(mods) - 1):  # a BatchNorm1d after an activation: into the next Linear
        bn, layer = mods[i], mods[i + 1]
        if (
            isinstance(bn, nn.BatchNorm1d)
            and bn.track_running_stats
            and isinstance(layer, nn.Linear)
        ):
            seq[i], seq[i + 1] = nn.Identity(), _linear_after_bn(bn, layer)
            mods[i], mods[i + 1] = seq[i], seq[i + 1]


def _linear_after_bn(bn: nn.BatchNorm1d, layer: nn.Linear) -> nn.Linear:
    """``layer(bn(x))`` as one Linear: bn(x) = x * scale + shift in eval mode."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    fused = copy.deepcopy(layer)
    w = layer.weight.detach()
    fused.weight = nn.Parameter(w * scale.detach()[None, :])
    bias = w @ shift.detach() + (layer.bias.detach() if layer.bias is not None else 0)
    fused.bias = nn.Parameter(bias)
    return fused


def prepare(generator: Generator, mode: Mode) -> Generator:
    """A serving copy of ``generator`` (the original is left as it is)."""
    G = copy.deepcopy(generator).eval()
    for module in G.modules():
        if isinstance(module, nn.Sequential):
            _fold(module)
    for p in G.parameters():
        p.requires_grad_(False)
    # channels_last: oneDNN's fast layout for fp32 and native bf16 convolutions (1.2-1.5x here
    # for fp32); emulated bf16 kernels are ~15x slower in it than in NCHW, so not for those.
    convolutional = any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in G.modules())
    if convolutional and (mode == "fp32" or cpu_has_fast_bf16()):
        G = G.to(memory_format=torch.channels_last)
    if mode == "bf16":
        G = G.to(torch.bfloat16)
    G.serving_mode = mode  # type: ignore[assignment]
    return G


def run(generator: Generator, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Images from a prepared generator: float32 CPU tensors in [-1, 1], (N, C, H, W)."""
    weight = next(generator.parameters())
    y = None if labels is None else labels.to(weight.device)
    with torch.inference_mode():
        out = generator(z.to(weight.device, weight.dtype), y)
    return out.float().clamp(-1, 1).contiguous().cpu()
