"""Generator and discriminator shapes, the MLP baseline's exact layers, and conditioning."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_core.config import TrainConfig
from gan_core.nets import build_discriminator, build_generator, init_weights
from tests.tiny import tiny

SIZES = [28, 32, 48, 64, 96, 128, 256]


def cfg(**kw) -> TrainConfig:
    """A resolved config with tiny widths unless overridden."""
    base = tiny(channels=1)
    return TrainConfig(**(base | kw))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/gan_core/conftest.py


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_dcgan_shapes_and_range(size, channels):
    torch.manual_seed(0)
    c = cfg(image_size=size, channels=channels, g_width=4, d_width=4)
    G, D = build_generator(c), build_discriminator(c)
    x = G(torch.randn(2, 16))
    assert x.shape == (2, channels, size, size)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert G.image_shape == (channels, size, size)
    logits = D(x)
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_dcgan_widths_are_capped_at_eight_times_base():
    G = build_generator(cfg(image_size=256, g_width=4, d_width=4))
    D = build_discriminator(cfg(image_size=256, g_width=4, d_width=4))
    g_convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d | nn.Conv2d)]
    d_convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert max(m.out_channels for m in g_convs) == 32
    assert g_convs[-2].out_channels == 4  # last upsampling block ends at g_width
    assert max(m.out_channels for m in d_convs) == 32
    assert d_convs[0].out_channels == 4


def test_dcgan_32px_matches_classic_layout():
    G = build_generator(cfg(image_size=32, g_width=8))
    ups = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in ups] == [(64, 32), (32, 16), (16, 8)]
    first = next(m for m in G.modules() if isinstance(m, nn.Linear))
    assert first.out_features == 64 * 4 * 4


def test_wgan_gp_critic_has_no_batchnorm():
    D = build_discriminator(cfg(image_size=32, loss="wgan-gp"))
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in D.modules())
    D_bce = build_discriminator(cfg(image_size=32, loss="bce"))
    assert any(isinstance(m, nn.BatchNorm2d) for m in D_bce.modules())


def test_wgan_gp_critic_is_per_sample():
    """Without batch-dependent layers, a sample's logit does not depend on its batch-mates."""
    torch.manual_seed(0)
    D = build_discriminator(cfg(image_size=32, loss="wgan-gp"))
    x = torch.randn(4, 1, 32, 32)
    torch.testing.assert_close(D(x)[:2], D(x[:2]))


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_spectral_norm_bounds_every_d_layer_and_replaces_batchnorm(arch):
    torch.manual_seed(0)
    c = cfg(image_size=32 if arch == "dcgan" else 28, arch=arch, spectral_norm=True)
    D = build_discriminator(c)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in D.modules())
    layers = [m for m in D.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    x = torch.randn(8, 1, c.image_size, c.image_size)
    for _ in range(30):  # each training forward runs one power iteration
        D(x)
    D.eval()
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2) for m in layers]
    assert torch.stack(sigmas).tolist() == pytest.approx([1.0] * len(layers), abs=0.05)
    plain = build_discriminator(cfg(image_size=c.image_size, arch=arch))
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


def test_dcgan_init_is_applied():
    torch.manual_seed(0)
    G = build_generator(cfg(image_size=64, g_width=16))
    conv = next(m for m in G.modules() if isinstance(m, nn.ConvTranspose2d))
    assert abs(conv.weight.std().item() - 0.02) < 0.005
    bn = next(m for m in G.modules() if isinstance(m, nn.BatchNorm2d))
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max() == 0


def test_init_weights_normal_002_and_batchnorm():
    torch.manual_seed(0)
    net = init_weights(nn.Sequential(nn.Linear(200, 300), nn.BatchNorm1d(300)))
    assert abs(net[0].weight.std().item() - 0.02) < 0.002
    assert abs(net[1].weight.mean().item() - 1.0) < 0.01
    assert net[1].bias.abs().max() == 0


def test_mlp_has_the_documents_exact_layers():
    c = cfg(arch="mlp", image_size=28, channels=1, latent_dim=100, g_width=64, d_width=64)
    G, D = build_generator(c), build_discriminator(c)
    assert [type(m) for m in G.net] == [nn.Linear, nn.LeakyReLU, nn.BatchNorm1d, nn.Linear, nn.Tanh]
    assert (G.net[0].in_features, G.net[0].out_features) == (100, 256)
    assert (G.net[3].in_features, G.net[3].out_features) == (256, 784)
    assert G.net[1].negative_slope == 0.2 and G.net[2].num_features == 256
    linears = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 256), (256, 1)]
    slopes = [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2, 0.2]
    assert not any(isinstance(m, nn.Sigmoid | nn.BatchNorm1d) for m in D.modules())
    x = G(torch.randn(3, 100))
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1.0
    assert D(x).shape == (3,)


def test_mlp_ignores_widths():
    a = build_generator(cfg(arch="mlp", image_size=28, g_width=8))
    b = build_generator(cfg(arch="mlp", image_size=28, g_width=128))
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_attributes():
    G = build_generator(cfg(image_size=32, channels=3))
    assert G.latent_dim == 16 and G.num_classes is None and G.image_shape == (3, 32, 32)
    assert build_discriminator(cfg(image_size=32)).num_classes is None
    c = cfg(image_size=32, conditional=True, num_classes=10, dataset="mnist")
    assert build_generator(c).num_classes == 10 and build_discriminator(c).num_classes == 10


def test_unresolved_config_is_rejected():
    with pytest.raises(ValueError, match="channels"):
        build_generator(TrainConfig(image_size=32))
    with pytest.raises(ValueError, match="channels"):
        build_discriminator(TrainConfig(image_size=32))
    with pytest.raises(ValueError, match="num_classes"):
        build_generator(cfg(image_size=32, conditional=True, dataset="mnist"))
    with pytest.raises(ValueError, match="num_classes"):
        build_discriminator(cfg(image_size=32, conditional=True, dataset="mnist"))


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_conditional_generator_depends_on_label(arch):
    torch.manual_seed(0)
    c = cfg(arch=arch, image_size=28, conditional=True, num_classes=10, dataset="mnist")
    G = build_generator(c).eval()
    z = torch.randn(1, 16).expand(2, 16)  # the same z twice
    x = G(z, torch.tensor([3, 7]))
    assert x.shape == (2, 1, 28, 28)
    assert (x[0] - x[1]).abs().max() > 1e-4
    torch.testing.assert_close(G(z, torch.tensor([3, 3]))[0], G(z, torch.tensor([3, 3]))[1])


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_projection_discriminator_uses_label(arch):
    torch.manual_seed(0)
    c = cfg(arch=arch, image_size=28, conditional=True, num_classes=10, dataset="mnist")
    D = build_discriminator(c).eval()
    x = torch.randn(1, 1, 28, 28).expand(2, 1, 28, 28)
    logits = D(x, torch.tensor([1, 2]))
    assert logits.shape == (2,)
    assert (logits[0] - logits[1]).abs() > 1e-6
    # The projection term is exactly <embed(y), h>.
    h = D.features(x[:1])
    expected = D.head(h).squeeze(1) + (D.embed(torch.tensor([1])) * h).sum(1)
    torch.testing.assert_close(D(x[:1], torch.tensor([1])), expected)


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_conditional_nets_require_labels(arch):
    c = cfg(arch=arch, image_size=28, conditional=True, num_classes=10, dataset="mnist")
    G, D = build_generator(c), build_discriminator(c)
    with pytest.raises(ValueError, match="labels"):
        G(torch.randn(2, 16))
    with pytest.raises(ValueError, match="labels"):
        D(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="shape"):
        G(torch.randn(2, 16), torch.zeros(2, 1, dtype=torch.long))


def test_unconditional_nets_ignore_labels():
    torch.manual_seed(0)
    c = cfg(image_size=28)
    G, D = build_generator(c).eval(), build_discriminator(c).eval()
    z = torch.randn(2, 16)
    torch.testing.assert_close(G(z, torch.tensor([0, 1])), G(z))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(D(x, torch.tensor([0, 1])), D(x))


def test_gradients_flow_through_both_nets():
    torch.manual_seed(0)
    c = cfg(image_size=32, channels=3)
    G, D = build_generator(c), build_discriminator(c)
    D(G(torch.randn(2, 16))).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())
    assert all(p.grad is not None for p in D.parameters())
