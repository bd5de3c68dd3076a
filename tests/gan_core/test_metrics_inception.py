"""Standard Inception features from a local weights file: wiring, conversions, no network.

The real FID weights are not shipped (nor downloaded), so the test makes a weights file of
its own: torch-fidelity's network with a random init, saved the way its loader reads it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gan_core.data import make_shapes
from gan_core.metrics import (
    INCEPTION_FEATURE_DIM,
    frechet_distance,
    inception_features,
    load_inception,
    mean_cov,
)
from tests.inception_weights import random_inception, write_inception_weights

REPO = Path(__file__).resolve().parents[2]


def _fidelity_module():
    from torch_fidelity import feature_extractor_inceptionv3

    return feature_extractor_inceptionv3


@pytest.fixture(scope="module")
def fidelity_net() -> nn.Module:
    return random_inception()


@pytest.fixture(scope="module")
def weights_file(fidelity_net, tmp_path_factory) -> Path:
    return write_inception_weights(
        tmp_path_factory.mktemp("inception") / "pt_inception-test.pth", fidelity_net
    )


@pytest.fixture
def no_network(monkeypatch):
    """Any download or socket connection fails the test."""
    import socket

    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("tried the network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(_fidelity_module(), "load_state_dict_from_url", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_features_and_fd_through_torch_fidelitys_network(weights_file, fidelity_net, no_network):
    model = load_inception(weights_file)
    assert not model.training and model.feature_dim == INCEPTION_FEATURE_DIM == 2048
    # Few images: Inception at 299px costs ~0.1 s per image on one CPU thread.
    gray, _ = make_shapes(6, 28, seed=0)  # uint8 (6, 1, 28, 28)
    feats = inception_features(model, gray, batch_size=4)
    assert feats.shape == (6, 2048) and feats.dtype == torch.float32
    with torch.no_grad():  # grey copied to RGB, then torch-fidelity's own resize and pool3
        (expected,) = fidelity_net(gray[:2].expand(-1, 3, -1, -1))
    torch.testing.assert_close(feats[:2], expected)
    as_float = gray[:2].float() / 127.5 - 1  # generator outputs in [-1, 1] become the same uint8
    torch.testing.assert_close(inception_features(model, as_float), feats[:2])

    colour = torch.randint(
        0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    other = inception_features(model, colour)
    a, b = mean_cov(feats), mean_cov(other)
    assert frechet_distance(*a, *a) == pytest.approx(0.0, abs=1e-6 * a[1].trace().item())
    assert frechet_distance(*a, *b) > 1.0


def test_missing_or_invalid_weights_are_clear_errors(tmp_path, no_network):
    fe = _fidelity_module()
    loader = fe.load_state_dict_from_url
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_inception(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only"):
        load_inception(garbage)
    code = tmp_path / "code.pth"
    torch.save({"w": torch.zeros(1), "obj": Path("x")}, code)  # a pickled object, not weights
    with pytest.raises(ValueError):
        load_inception(code)
    other_net = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(3)}, other_net)
    with pytest.raises(ValueError, match="not the FID Inception"):
        load_inception(other_net)
    assert fe.load_state_dict_from_url is loader  # the swapped-in loader was put back


def test_torch_fidelity_is_imported_only_when_inception_is_loaded():
    code = "import sys, gan_core.metrics; print('torch_fidelity' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
