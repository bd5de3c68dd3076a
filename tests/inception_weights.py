"""A weights file in the format of the standard FID Inception-v3, made here with random weights.

The real weights are not shipped (nor downloaded): tests prove the wiring with this file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def random_inception() -> nn.Module:
    """torch-fidelity's Inception with random weights, built without loading any file."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    original_load, original_state = (
        fe.load_state_dict_from_url,
        fe.FeatureExtractorInceptionV3.load_state_dict,
    )
    fe.load_state_dict_from_url = lambda *args, **kwargs: {}  # type: ignore[assignment]
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None  # type: ignore[assignment,method-assign]
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url = original_load
        fe.FeatureExtractorInceptionV3.load_state_dict = original_state  # type: ignore[method-assign]
    # Default conv init shrinks activations ~1e8-fold over Inception's depth; He init keeps
    # the features O(1) so that distances are well above rounding.
    with torch.random.fork_rng():
        torch.manual_seed(1)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.eval()


def write_inception_weights(path: Path, net: nn.Module | None = None) -> Path:
    """Save a (random) Inception's state dict as the .pth file torch-fidelity reads."""
    torch.save((net or random_inception()).state_dict(), path)
    return path
