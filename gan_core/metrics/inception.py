"""Standard Inception-v3 features (FID/KID as published), only from weights an operator supplies.

The network is torch-fidelity's ``FeatureExtractorInceptionV3``: the TensorFlow FID graph
ported to PyTorch, with its TF1-compatible bilinear resize to 299 x 299 and the 2048-d pool3
layer, so features match torch-fidelity's ``fid``/``kid`` on the same uint8 images. The
weights are the usual ``pt_inception-2015-12-05`` / ``weights-inception-2015-12-05`` file.

Nothing here touches the network or unpickles code: torch-fidelity would download the
weights when given no path, and would ``torch.load`` a given path with ``weights_only=False``;
instead the file is read here with ``weights_only=True`` and the checked state dict is handed
to its constructor. torch-fidelity is imported lazily, only by `load_inception`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

INCEPTION_FEATURE_DIM = 2048
_LOADER = "load_state_dict_from_url"  # the name torch-fidelity's module downloads through
_PATCH_LOCK = threading.Lock()  # the loader is swapped on a shared module while constructing


def to_uint8_rgb(x: Tensor) -> Tensor:
    """(N, 1|3, H, W) uint8 or [-1,1] float -> uint8 (N, 3, H, W), grey copied to 3 channels."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        # the rounding a PNG of the image would store (gan_core.sampling.to_uint8_grid)
        x = (x.float() + 1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class InceptionFeatures(nn.Module):
    """The FID Inception network as an extractor: ``features`` gives (N, 2048) pool3 features."""

    kind = "inception"
    feature_dim = INCEPTION_FEATURE_DIM
    num_classes = None

    def __init__(self, net: nn.Module, max_batch: int = 32) -> None:
        super().__init__()
        self.net = net
        self.max_batch = max_batch  # at 299px each image holds ~30 MB of activations

    def features(self, x: Tensor) -> Tensor:
        """(N, 1|3, H, W) uint8 or [-1,1] float images, any size -> (N, 2048) float32."""
        x = to_uint8_rgb(x)
        device = next(self.net.parameters()).device
        out = [self.net(chunk.to(device))[0] for chunk in x.split(self.max_batch)]
        return torch.cat(out) if out else torch.empty(0, INCEPTION_FEATURE_DIM)

    def forward(self, x: Tensor) -> Tensor:
        """Same as features."""
        return self.features(x)


def read_inception_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict in a local .pth file, loaded with weights_only=True; clear errors if not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {path}: pass the local pt_inception-2015-12-05 "
            ".pth file (nothing is downloaded)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have no common base class
        raise ValueError(f"{path} is not a weights-only PyTorch state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} does not hold a state dict (str -> tensor)")
    return state


def load_inception(
    weights_path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> InceptionFeatures:
    """torch-fidelity's FID Inception-v3 with the given local weights, in eval mode."""
    state = read_inception_weights(weights_path)
    try:
        from torch_fidelity import feature_extractor_inceptionv3 as fidelity
    except ImportError as exc:
        raise RuntimeError(
            "Inception features need torch-fidelity (pip install torch-fidelity)"
        ) from exc
    if not hasattr(fidelity, _LOADER):
        raise RuntimeError(f"this torch-fidelity has no {_LOADER}; cannot load weights safely")

    def no_download(url: str, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        return state  # the constructor "downloads" the dict we already loaded and checked

    with _PATCH_LOCK:
        original: Callable[..., Any] = getattr(fidelity, _LOADER)
        setattr(fidelity, _LOADER, no_download)
        try:
            net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        except RuntimeError as exc:  # load_state_dict: missing/unexpected keys, wrong shapes
            raise ValueError(f"{weights_path}: not the FID Inception-v3 weights: {exc}") from exc
        finally:
            setattr(fidelity, _LOADER, original)
    return InceptionFeatures(net).to(device).eval()


@torch.no_grad()
def inception_features(model: InceptionFeatures, images: Tensor, batch_size: int = 32) -> Tensor:
    """(N, 2048) float32 CPU pool3 features of uint8 or [-1,1] float images, batch by batch."""
    chunks = [
        model.features(images[i : i + batch_size]).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, INCEPTION_FEATURE_DIM)
