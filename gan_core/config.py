"""The one training config: HTTP request body, task argument, and part of every checkpoint."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from gan_core.config_augment import (
    ADAPTIVE_DEFAULT_OPS,
    check_augment,
    known_ops,
    probability_or_adaptive,
    with_default_ops,
)
from gan_core.config_resnet import check_resnet
from gan_core.presets import PresetName, expand_preset

Arch = Literal["dcgan", "mlp", "resnet"]
LossName = Literal["bce", "hinge", "wgan-gp", "lsgan", "rpgan"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
LrSchedule = Literal["constant", "linear", "cosine"]
DeviceName = Literal["auto", "cpu", "cuda"]

MLP_MAX_PIXELS = 64 * 64 * 3  # the MLP baseline flattens images; past this it is a poor model
# What None means for each of the fields only arch resnet takes (gan_core.config_resnet)
RESNET_DEFAULTS = {"group_size": 16, "expansion": 2}
# blocks_per_stage's default: 1 up to this side, 2 above. On this repo's 2-core CPU (one
# thread, batch 32) a 32 px G->D forward and backward with 2 blocks per stage took 6.8x the
# DCGAN default's time (284 against 61 MFLOP forward per image); with 1 block, 3.9x (146).
RESNET_ONE_BLOCK_MAX_SIDE = 32


def dcgan_base(image_size: int) -> int | None:
    """The starting feature-map side for a DCGAN of this size, or None if it cannot make it.

    The generator starts at a base side of 4..7 and doubles at least twice
    (28 = 7*4, 32 = 4*8, 48 = 6*8, 64, 96, 128, 256).
    """
    side, doublings = image_size, 0
    while side > 7 and side % 2 == 0:
        side //= 2
        doublings += 1
    return side if 4 <= side <= 7 and doublings >= 2 else None


def _penalty_gamma(name: str, images: str) -> Any:
    """A zero-centred penalty's weight gamma: 0 (off) .. 1000."""
    return Field(
        0.0,
        strict=True,
        ge=0.0,
        le=1000.0,
        description=f"{name}: gamma/2 * E||grad D({images})||^2 added to D's loss; 0 = off",
    )


class JobConfigBase(BaseModel):
    """What every kind of job config shares (it has no fields of its own, so each kind keeps
    its fields' order): frozen, no unknown fields, the checks of the fields every kind has
    (dataset, betas) and the learning-rate schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("dataset", check_fields=False)
    @classmethod
    def _no_control_characters(cls, name: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ValueError("control characters (NUL, newline, ...) are not allowed")
        return name

    @field_validator("g_betas", "d_betas", check_fields=False)
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("each Adam beta must be in [0, 1)")
        return betas

    def lr_factor(self, step: int) -> float:
        """The schedule's multiplier of g_lr and d_lr for the update after ``step`` steps."""
        steps, schedule, start = (
            getattr(self, "steps"),  # noqa: B009  (fields of the subclasses)
            getattr(self, "lr_schedule"),  # noqa: B009
            getattr(self, "lr_decay_start"),  # noqa: B009
        )
        progress = step / steps
        if schedule == "constant" or progress <= start:
            return 1.0
        t = min((progress - start) / (1.0 - start), 1.0)
        return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))


class TrainConfig(JobConfigBase):
    """Everything that defines a training run. Frozen: a run's config never changes under it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # the dataset-dependent fields, filled in when training starts (None: from the dataset)
    resolved_fields: ClassVar[tuple[str, ...]] = ("channels", "num_classes")

    preset: PresetName | None = Field(
        None,
        description="named values for the fields below (gan_core.presets): dcgan (the "
        "defaults), resnet, resnet-small-data; a field set explicitly wins",
    )
    # --- data ---
    dataset: str = Field(
        "shapes",
        min_length=1,
        max_length=200,
        description="built-in name (shapes, fashion-mnist, mnist, cifar10), 'npz:PATH', "
        "'image-folder:PATH', or in the service an uploaded dataset id",
    )
    image_size: int = Field(
        32, strict=True, ge=16, le=256, description="square side of generated images"
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1 or 3; None takes the dataset's own (resolved when training starts)"
    )
    # --- model ---
    arch: Arch = "dcgan"
    conditional: bool = Field(
        False, strict=True, description="class-conditional G and projection D"
    )
    num_classes: int | None = Field(
        None, strict=True, ge=2, le=1000, description="resolved from the dataset when conditional"
    )
    latent_dim: int = Field(128, strict=True, ge=1, le=1024)
    # 32 rather than 64 (until 2026-12-04), with 4,000 steps rather than 3,000: on a CPU a
    # width-64 step costs 2.4-3x a width-32 one, and width 32 given 4,000 steps reached a
    # lower Fashion-MNIST FD than the old default (width 64, betas (0.5, 0.999), 3,000 steps)
    # in 0.44-0.50x the time, on two seeds (benchmarks/recipes.py, README "Width against
    # steps"). On a GPU, where these small nets cost about the same per step at either
    # width, pass 64.
    g_width: int = Field(
        32, strict=True, ge=4, le=1024, description="generator base width (channels)"
    )
    d_width: int = Field(
        32, strict=True, ge=4, le=1024, description="discriminator base width (channels)"
    )
    # The residual nets' shape (arch resnet only; None = the default below, and a value set
    # with another arch is refused rather than ignored). g_width/d_width stay the base width.
    blocks_per_stage: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=16,
        description="resnet: residual blocks per resolution stage (None = 1 up to 32px, else 2)",
    )
    group_size: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=1024,
        description="resnet: channels per group of each block's grouped 3x3 conv (None = 16)",
    )
    expansion: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=8,
        description="resnet: a block's inner width as a multiple of its stage width (None = 2)",
    )
    # --- objective ---
    loss: LossName = "hinge"
    gp_weight: float = Field(
        10.0, strict=True, ge=0.0, le=1000.0, description="WGAN-GP penalty weight"
    )
    spectral_norm: bool = Field(
        False,
        strict=True,
        description="spectral normalisation of D's layers (SN-GAN); D then has no BatchNorm",
    )
    d_steps: int = Field(
        1, strict=True, ge=1, le=10, description="discriminator (critic) steps per G step"
    )
    # Zero-centred gradient penalties (Mescheder et al. 2018), usable with any loss; R3GAN
    # pairs both with rpgan. Either one drops BatchNorm from D, as wgan-gp does.
    r1_gamma: float = _penalty_gamma("R1", "real")
    r2_gamma: float = _penalty_gamma("R2", "fake")
    reg_every: int = Field(
        1,
        strict=True,
        ge=1,
        le=64,
        description="lazy regularisation: R1/R2 every k-th D step, weighted by k (StyleGAN2)",
    )
    # --- optimisation ---
    batch_size: int = Field(64, strict=True, ge=2, le=4096)
    # 8e-4 rather than DCGAN's 2e-4: the EMA generator averages out the noisier raw G (whose
    # FD barely moves with the rate), so the sampled G gains. Fashion-MNIST FD at 3,000 steps,
    # width 32: 2e-4 2.69, 4e-4 2.08, 6e-4 1.93, 8e-4 1.72 (benchmarks/quality.py).
    # strict: JSON true is not a learning rate (lax mode took it as 1.0); ints are still numbers
    g_lr: float = Field(8e-4, strict=True, gt=0.0, le=1.0)
    d_lr: float = Field(8e-4, strict=True, gt=0.0, le=1.0)
    # No momentum (beta1 0, beta2 0.99, as StyleGAN2 and R3GAN use) rather than DCGAN's
    # (0.5, 0.999): at 3,000 steps it lowered the EMA G's FD by about a fifth, and reached the
    # old default's 3,000-step FD in about 2,000 steps (benchmarks/recipes.py, README).
    g_betas: tuple[StrictFloat, StrictFloat] = (0.0, 0.99)
    d_betas: tuple[StrictFloat, StrictFloat] = (0.0, 0.99)
    steps: int = Field(
        4000, strict=True, ge=1, le=10_000_000, description="generator steps in total"
    )
    # Learning-rate decay (both nets, on top of any rollback's halving): from lr_decay_start
    # (a fraction of steps) down towards 0 at the last step, linearly or on a half cosine.
    lr_schedule: LrSchedule = "constant"
    lr_decay_start: float = Field(
        0.0,
        strict=True,
        ge=0.0,
        lt=1.0,
        description="fraction of steps after which the rates decay (linear or cosine schedule)",
    )
    # --- stabilisers ---
    ema_decay: float | None = Field(
        0.999,
        strict=True,
        ge=0.0,
        lt=1.0,
        description="upper bound of the EMA decay; None turns EMA off",
    )
    ema_rampup: float | None = Field(
        0.05,
        strict=True,
        gt=0.0,
        le=1.0,
        description="EMA half-life as a fraction of steps done so far (warm-up); None = fixed decay",
    )
    # Off by default: measured on Fashion-MNIST (60k images, 3,000 steps) DiffAugment
    # more than doubled the Fréchet distance. It pays off on small datasets (a few thousand
    # images), where D otherwise memorises: turn on "translation,cutout" there.
    augment: str | None = Field(
        None,
        max_length=64,
        description="augmentations D sees (real and fake): comma-separated of color, "
        "translation, cutout, flip, rot90; None = off (or, with augment_p adaptive, "
        f"{ADAPTIVE_DEFAULT_OPS})",
    )
    # Adaptive augmentation (StyleGAN2-ADA): p moves every ada_interval D updates by
    # batch_size * ada_interval / (ada_kimg * 1000) towards r_t = E[sign(D(real))] =
    # ada_target. ada_kimg 100, not the paper's 500: at 500 a default run (4,000 steps of 64
    # images, 256k images) could take p at most to 0.51; at 100 p can go 0 -> 1 in 100k
    # images (about 1,560 steps of 64), so it settles within a short CPU run.
    augment_p: float | Literal["adaptive"] = Field(
        1.0,
        description="probability of each augment op per sample: a number in [0, 1] (1 = "
        "DiffAugment, every op on every image) or 'adaptive' (ADA: from 0, following D's "
        "overfitting)",
    )
    ada_target: float = Field(
        0.6,
        strict=True,
        gt=0.0,
        lt=1.0,
        description="adaptive augment_p: the E[sign(D(real))] p steers towards",
    )
    ada_interval: int = Field(
        4, strict=True, ge=1, le=1000, description="adaptive augment_p: D updates between moves"
    )
    ada_kimg: float = Field(
        100.0,
        strict=True,
        gt=0.0,
        le=100_000.0,
        description="adaptive augment_p: thousands of real images for p to go from 0 to 1",
    )
    # --- run control ---
    seed: int = Field(0, strict=True, ge=0, le=2**63 - 1)
    checkpoint_every: int = Field(500, strict=True, ge=1, le=10_000_000)
    keep_checkpoints: int = Field(5, strict=True, ge=1, le=1000)
    precision: Precision = Field(
        "auto",
        description="auto (default): bf16 where the device runs it natively (CUDA with bf16, a "
        "CPU with AVX-512 BF16 or AMX), else fp32; resolved when the run starts and stored so",
    )
    device: DeviceName = "auto"
    devices: int = Field(
        1,
        strict=True,
        ge=1,
        le=64,
        description="processes training the job data-parallel, one per device (GPU, or CPU "
        "process): each takes batch_size / devices of every batch; a resume may change it",
    )
    # what a run does when a loss or weight goes NaN/Inf: end failed, naming the step; or
    # roll back to its last good checkpoint with halved learning rates and a new data order
    on_divergence: Literal["fail", "rollback"] = "fail"
    max_rollbacks: int = Field(3, strict=True, ge=1, le=10, description="rollbacks before failing")

    @model_validator(mode="before")
    @classmethod
    def _noise_kind(cls, data: Any) -> Any:
        """``kind: "noise"`` names this config among the job kinds (gan_core.jobconfig); it is
        the only kind it takes, and it is not stored (a config without a kind is noise)."""
        if isinstance(data, dict) and "kind" in data:
            if data["kind"] != "noise":
                raise ValueError(
                    f"kind: {data['kind']!r} is not a noise-to-image job; use the job config "
                    "union (gan_core.jobconfig.parse_config) for translation kinds"
                )
            data = {k: v for k, v in data.items() if k != "kind"}
        return data

    @property
    def kind(self) -> str:
        return "noise"

    # augmentation (gan_core.config_augment): adaptive's default ops, augment_p's value, ops
    _adaptive_default_ops = model_validator(mode="before")(staticmethod(with_default_ops))
    _probability_or_adaptive = field_validator("augment_p", mode="before")(
        staticmethod(probability_or_adaptive)
    )
    _known_augment_ops = field_validator("augment")(staticmethod(known_ops))
    # a preset's fields go in first, before every other check of the raw config (of the
    # "before" model validators, the last defined runs first)
    _expand_preset = model_validator(mode="before")(staticmethod(expand_preset))

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.arch in ("dcgan", "resnet") and dcgan_base(self.image_size) is None:
            raise ValueError(
                f"image_size: {self.arch} cannot produce {self.image_size}px images; use a side "
                "of 4..7 times a power of two >= 4, e.g. 28, 32, 48, 64, 96, 128, 256"
            )
        check_resnet(self)
        if self.arch == "mlp":
            pixels = self.image_size**2 * (self.channels or 1)
            if pixels > MLP_MAX_PIXELS:
                raise ValueError(
                    f"image_size: the mlp baseline is limited to {MLP_MAX_PIXELS} pixel values "
                    f"per image; {self.image_size}px x {self.channels or 1} channels is {pixels}"
                )
        if self.num_classes is not None and not self.conditional:
            raise ValueError("num_classes: only meaningful with conditional=true")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError(
                "precision: fp16 autocast needs device cuda (or auto); use bf16 on CPU"
            )
        if self.loss != "wgan-gp" and self.gp_weight != 10.0 and self.gp_weight != 0.0:
            # Accepting it silently would let a user believe a penalty is applied.
            raise ValueError("gp_weight: only used with loss wgan-gp")
        if self.reg_every != 1 and not (self.r1_gamma or self.r2_gamma):
            raise ValueError("reg_every: only used with r1_gamma or r2_gamma above 0")
        check_augment(self)
        if self.batch_size % self.devices:
            raise ValueError(
                f"batch_size: {self.batch_size} does not split evenly over {self.devices} devices"
            )
        if self.lr_decay_start and self.lr_schedule == "constant":
            raise ValueError("lr_decay_start: only used with lr_schedule linear or cosine")
        from gan_core.data import builtin_info  # local: data imports config

        info = builtin_info(self.dataset)
        if info is not None and self.conditional and info.num_classes is None:
            raise ValueError(f"conditional: dataset {self.dataset!r} has no labels")
        return self

    @property
    def resnet_blocks(self) -> int:
        """Residual blocks per stage of the resnet nets (the field, or its default)."""
        if self.blocks_per_stage is not None:
            return self.blocks_per_stage
        return 1 if self.image_size <= RESNET_ONE_BLOCK_MAX_SIDE else 2

    @property
    def resnet_group_size(self) -> int:
        """Channels per group of the resnet blocks' grouped 3x3 conv."""
        return self.group_size or RESNET_DEFAULTS["group_size"]

    @property
    def resnet_expansion(self) -> int:
        """A resnet block's inner width over its stage width."""
        return self.expansion or RESNET_DEFAULTS["expansion"]

    @property
    def augment_ops(self) -> tuple[str, ...]:
        return tuple(self.augment.split(",")) if self.augment else ()

    @property
    def per_sample_penalty(self) -> bool:
        """True when D's loss has a per-sample gradient penalty, so D must not use BatchNorm."""
        return self.loss == "wgan-gp" or self.r1_gamma > 0 or self.r2_gamma > 0

    @property
    def d_batchnorm(self) -> bool:
        """Whether the DCGAN D normalises with BatchNorm: not under a per-sample penalty, nor
        under spectral normalisation, which takes its place."""
        return not (self.per_sample_penalty or self.spectral_norm)

    @property
    def resolved(self) -> bool:
        """True once dataset-dependent fields (channels, num_classes) are filled in."""
        return self.channels is not None and (not self.conditional or self.num_classes is not None)
