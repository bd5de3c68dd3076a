"""Translating images with a trained translator: load it from a checkpoint alone, prepare an
input image as the training data was prepared, and run it (eval mode: a pure function of
the input, the same bytes for the same input)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core.data._base import DatasetError
from gan_core.data.files import fit_square
from gan_core.translation.config import TranslationConfig
from gan_core.translation.nets import build_translator

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["DIRECTIONS", "load_translator", "prepare_image", "translate"]

DIRECTIONS = {"a2b": "G_ab", "b2a": "G_ba"}


def load_translator(
    ckpt_dir: str | Path,
    direction: str = "a2b",
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A checkpoint's translator for ``direction`` (a2b; b2a for unpaired models), in eval
    mode, with ``config``, ``direction``, ``in_channels``, ``out_channels`` and
    ``checkpoint_step`` attributes. The EMA weights are used when the run kept them."""
    ckpt_dir = Path(ckpt_dir)
    meta = ckpt.read_meta(ckpt_dir, verify=False)
    config = ckpt.job_config_from_meta(meta)
    if not isinstance(config, TranslationConfig):
        raise ckpt.CheckpointError(
            "this checkpoint holds a noise-to-image generator: it samples, it does not "
            "translate images"
        )
    if direction not in config.directions:
        raise ValueError(
            f"direction: a {config.kind} model translates {' or '.join(config.directions)}, "
            f"not {direction!r}"
        )
    assert config.channels_a is not None and config.channels_b is not None  # resolved
    c_in, c_out = (
        (config.channels_a, config.channels_b)
        if direction == "a2b"
        else (config.channels_b, config.channels_a)
    )
    G = build_translator(config.generator, c_in, c_out, config.image_size, config.g_width)
    # the generator file alone (verified): the train state (discriminators, optimizer
    # moments, pools) is several times its size and not needed to translate
    tensors = ckpt._load_tensors(ckpt_dir, ckpt.GENERATOR_FILE, meta)
    name = DIRECTIONS[direction]
    prefix = f"{name}_ema" if ema and any(k.startswith(f"{name}_ema.") for k in tensors) else name
    try:
        G.load_state_dict(ckpt.sub_state(tensors, prefix), strict=True)
    except RuntimeError as exc:
        raise ckpt.CheckpointError(
            f"checkpoint {ckpt_dir.name}: weights do not fit its config"
        ) from exc
    for key, value in {
        "config": config,
        "direction": direction,
        "in_channels": c_in,
        "out_channels": c_out,
        "checkpoint_step": int(meta["step"]),
    }.items():
        setattr(G, key, value)
    return G.to(device).eval().requires_grad_(False)


def prepare_image(im: PILImage, size: int, channels: int) -> torch.Tensor:
    """An image as a translator's input, uint8 (channels, size, size): centre-cropped to a
    square and resized, as training images are. A colour image whose channels are all equal
    counts as grey; a grey image for a colour model, or a colour one for a grey model, is
    refused rather than converted (the model was not trained on such inputs)."""
    rgb = im.convert("RGB") if im.mode not in ("L", "RGB") else im
    if rgb.mode == "RGB":
        arr = np.asarray(rgb)
        if bool((arr[..., :1] == arr[..., 1:]).all()):
            rgb = rgb.convert("L")
    have = 1 if rgb.mode == "L" else 3
    if have != channels:
        want = "grey (1-channel)" if channels == 1 else "colour (RGB)"
        got = "grey" if have == 1 else "in colour"
        raise DatasetError(f"the image is {got}; this model translates {want} images")
    arr = fit_square(rgb, size)
    return torch.from_numpy((arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy())


@torch.no_grad()
def translate(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C_in, S, S) → uint8 (N, C_out, S, S) through ``model`` (in eval mode)."""
    return to_pixels(translator_output(model, images))


@torch.no_grad()
def translator_output(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model``'s float output in [-1, 1] for uint8 (N, C_in, S, S) images: translate's first
    half, for callers that compare outputs before rounding (the service's batcher)."""
    device = next(model.parameters()).device
    return model(images.to(device).float().div_(127.5).sub_(1.0))


def to_pixels(output: torch.Tensor) -> torch.Tensor:
    """A translator's float output as uint8 pixels on the CPU: translate's second half (into a
    new tensor, so ``output`` itself may still be compared)."""
    return output.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()
