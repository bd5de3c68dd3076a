"""Generator and discriminator networks: the MLP baseline and a size-flexible DCGAN (the
R3GAN-style residual nets are in gan_core.nets_resnet, wrapped by the same two classes).

Every arch has an optional class-conditional form: G multiplies a label embedding
into z, and D is a projection discriminator (Miyato & Koyama 2018). D returns raw
logits; the losses in gan_core.losses apply any sigmoid themselves.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_core.config import TrainConfig, dcgan_base
from gan_core.nets_resnet import resnet_discriminator_features, resnet_generator_body

__all__ = ["Discriminator", "Generator", "build_discriminator", "build_generator", "init_weights"]

LEAK = 0.2  # LeakyReLU slope, as in the source document and DCGAN


def init_weights(module: nn.Module) -> nn.Module:
    """Apply DCGAN init in place to every conv/linear/BatchNorm layer inside module."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def _check_labels(y: Tensor | None, n: int, num_classes: int | None) -> Tensor | None:
    """Validate y for a net with num_classes (None = unconditional, y ignored)."""
    if num_classes is None:
        return None
    if y is None:
        raise ValueError(
            f"this network is class-conditional ({num_classes} classes): pass labels y"
        )
    # A (N, 1) label tensor would silently broadcast to (N, N, F) below, so insist on (N,).
    if y.shape != (n,):
        raise ValueError(f"labels y must have shape ({n},), got {tuple(y.shape)}")
    return y


class Generator(nn.Module):
    """Maps latents z (N, latent_dim) and optional labels y (N,) to images (N, C, H, W) in [-1, 1]."""

    def __init__(
        self,
        body: nn.Module,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        num_classes: int | None,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = image_shape
        self.num_classes = num_classes
        self.net = body  # (N, latent_dim) -> anything that reshapes to (N, C, H, W)
        # Conditioning multiplies a label embedding into z rather than concatenating, so the
        # body (and the MLP baseline's exact layers) stays the same for both forms. The default
        # N(0, 1) init keeps z * embed(y) at unit variance.
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes is not None else None

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        y = _check_labels(y, z.shape[0], self.num_classes)
        if self.embed is not None:
            z = z * self.embed(y)  # (N, latent_dim)
        return self.net(z).view(z.shape[0], *self.image_shape)  # (N, C, H, W)


class Discriminator(nn.Module):
    """Maps images x (N, C, H, W) and optional labels y (N,) to raw logits (N,)."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = features  # (N, C, H, W) -> (N, feature_dim)
        self.head = nn.Linear(feature_dim, 1)
        self.embed = None
        if num_classes is not None:
            # Projection term <embed(y), h>. Small init so that at the start it is no larger
            # than the unconditional head and the class signal is learned, not imposed.
            self.embed = nn.Embedding(num_classes, feature_dim)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = _check_labels(y, x.shape[0], self.num_classes)
        h = self.features(x)  # (N, F)
        logits = self.head(h).squeeze(1)  # (N,)
        if self.embed is not None:
            logits = logits + (self.embed(y) * h).sum(dim=1)
        return logits


# --- MLP baseline -----------------------------------------------------------------------


def _mlp_generator(cfg: TrainConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = image_shape
    return nn.Sequential(
        nn.Linear(cfg.latent_dim, 256),
        nn.LeakyReLU(LEAK),
        nn.BatchNorm1d(256),
        nn.Linear(256, c * h * w),
        nn.Tanh(),
    )  # (N, latent_dim) -> (N, C*H*W)


def _mlp_discriminator(image_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    c, h, w = image_shape
    # The source document ended D with Sigmoid; we return the logit and the losses use
    # softplus (BCE-with-logits): the same objective, but it does not saturate to log(0).
    features = nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 512),
        nn.LeakyReLU(LEAK),
        nn.Linear(512, 256),
        nn.LeakyReLU(LEAK),
    )  # (N, C, H, W) -> (N, 256)
    return features, 256


# --- DCGAN --------------------------------------------------------------------------------


class _Reshape(nn.Module):
    """(N, C*H*W) -> (N, C, H, W)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], *self.shape)


def _dcgan_layout(image_size: int) -> tuple[int, int]:
    """(base side b, number of doublings k) with image_size == b * 2**k."""
    b = dcgan_base(image_size)
    if b is None:
        raise ValueError(f"dcgan cannot produce {image_size}px images")
    return b, (image_size // b).bit_length() - 1


def _dcgan_generator(cfg: TrainConfig, c: int) -> nn.Module:
    b, k = _dcgan_layout(cfg.image_size)
    g, cap = cfg.g_width, cfg.g_width * 8
    # Width at resolution level i (side b * 2**i): halves per doubling, ending at g_width;
    # capped so 128/256px nets do not grow 16-32x wider at the low-resolution end.
    widths = [min(g * 2 ** (k - i), cap) for i in range(k + 1)]
    layers: list[nn.Module] = [
        nn.Linear(cfg.latent_dim, widths[0] * b * b, bias=False),  # BatchNorm follows
        nn.BatchNorm1d(widths[0] * b * b),
        nn.ReLU(),
        _Reshape(widths[0], b, b),
    ]
    for i in range(k):  # (N, widths[i], s, s) -> (N, widths[i+1], 2s, 2s)
        layers += [
            nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=False),
            nn.BatchNorm2d(widths[i + 1]),
            nn.ReLU(),
        ]
    layers += [nn.Conv2d(widths[k], c, 3, 1, 1), nn.Tanh()]  # (N, C, H, W)
    return nn.Sequential(*layers)


def _dcgan_discriminator(cfg: TrainConfig, c: int) -> tuple[nn.Module, int]:
    b, k = _dcgan_layout(cfg.image_size)
    d, cap = cfg.d_width, cfg.d_width * 8
    # A gradient penalty (WGAN-GP's, R1, R2) is per sample; BatchNorm mixes samples in a batch
    # and makes it meaningless, so such a critic has no norm (and then wants conv biases back).
    # Spectral normalisation replaces BatchNorm too, as in SN-GAN.
    no_norm = not cfg.d_batchnorm
    # Width after j halvings of the side (j = 1..k): doubles per halving from d_width.
    widths = [min(d * 2 ** (j - 1), cap) for j in range(1, k + 1)]
    layers: list[nn.Module] = [nn.Conv2d(c, widths[0], 4, 2, 1), nn.LeakyReLU(LEAK)]
    for j in range(1, k):  # (N, widths[j-1], s, s) -> (N, widths[j], s/2, s/2)
        layers += [
            nn.Conv2d(widths[j - 1], widths[j], 4, 2, 1, bias=no_norm),
            nn.Identity() if no_norm else nn.BatchNorm2d(widths[j]),
            nn.LeakyReLU(LEAK),
        ]
    layers.append(nn.Flatten())  # (N, widths[-1] * b * b)
    return nn.Sequential(*layers), widths[-1] * b * b


# --- builders -----------------------------------------------------------------------------


def _resolved_shape(cfg: TrainConfig) -> tuple[tuple[int, int, int], int | None]:
    """(image_shape, num_classes) of a resolved config; ValueError if it is not resolved."""
    if cfg.channels is None:
        raise ValueError("cfg.channels is None: resolve the config against its dataset first")
    if cfg.conditional and cfg.num_classes is None:
        raise ValueError("cfg.conditional needs cfg.num_classes: resolve the config first")
    num_classes = cfg.num_classes if cfg.conditional else None
    return (cfg.channels, cfg.image_size, cfg.image_size), num_classes


def build_generator(cfg: TrainConfig) -> Generator:
    """The generator described by a resolved cfg."""
    shape, num_classes = _resolved_shape(cfg)
    if cfg.arch == "mlp":
        return Generator(_mlp_generator(cfg, shape), cfg.latent_dim, shape, num_classes)
    if cfg.arch == "dcgan":
        body = init_weights(_dcgan_generator(cfg, shape[0]))
        return Generator(body, cfg.latent_dim, shape, num_classes)
    if cfg.arch == "resnet":  # its own (fix-up) init
        return Generator(resnet_generator_body(cfg, shape[0]), cfg.latent_dim, shape, num_classes)
    raise ValueError(f"unknown arch {cfg.arch!r}")


def build_discriminator(cfg: TrainConfig) -> Discriminator:
    """The discriminator (critic) described by a resolved cfg."""
    shape, num_classes = _resolved_shape(cfg)
    if cfg.arch == "mlp":
        net = Discriminator(*_mlp_discriminator(shape), num_classes)
    elif cfg.arch == "dcgan":
        features, dim = _dcgan_discriminator(cfg, shape[0])
        net = Discriminator(init_weights(features), dim, num_classes)
        init_weights(net.head)
    elif cfg.arch == "resnet":
        net = Discriminator(*resnet_discriminator_features(cfg, shape[0]), num_classes)
    else:
        raise ValueError(f"unknown arch {cfg.arch!r}")
    return _spectral_normed(net) if cfg.spectral_norm else net


def _spectral_normed(net: Discriminator) -> Discriminator:
    """Every conv and linear layer of D divided by its largest singular value (Miyato et al.
    2018), estimated by one power iteration per forward in training."""
    for module in list(net.modules()):
        if isinstance(module, nn.Conv2d | nn.Linear):
            spectral_norm(module)
    return net
