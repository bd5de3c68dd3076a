"""The configs of translation jobs: ``kind: "paired"`` (pix2pix) and ``"unpaired"`` (CycleGAN).

They share the run-control fields of a noise job's TrainConfig (seed, steps, checkpoints,
precision, device, divergence) and add their own; each kind shows only the fields that apply
to it (pydantic discriminated union on ``kind``: gan_core.jobconfig). Defaults are the
papers' (Isola et al. 2017; Zhu et al. 2017): Adam 2e-4, betas (0.5, 0.999), a constant rate
for the first half and a linear decay to 0 over the second, instance norm, L1 weight 100
(paired), cycle weight 10 and identity weight 0.5 of it with a pool of 50 generated images
(unpaired). The papers train with batch size 1; the default here is 4, which costs the same
per image on a CPU and uses a GPU better (instance norm makes the batch size neutral for the
nets themselves).

Images are made square as every dataset is: centre-cropped to a square, then resized to
``image_size`` (gan_core.data.files.fit_square); the same holds for an image to translate.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StrictFloat, model_validator

from gan_core.config import DeviceName, JobConfigBase, LrSchedule, Precision

__all__ = ["PairedConfig", "TranslationConfig", "UnpairedConfig"]

TranslationLoss = Literal["bce", "lsgan", "hinge"]
GeneratorName = Literal["unet", "resnet"]


class TranslationConfig(JobConfigBase):
    """Fields common to both translation kinds. Frozen, as every run's config."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # the dataset-dependent fields, filled in when training starts (None: from the dataset)
    resolved_fields: ClassVar[tuple[str, ...]] = ("channels_a", "channels_b")

    kind: Literal["paired", "unpaired"]
    # --- data ---
    dataset: str = Field(
        "shapes-edges",
        min_length=1,
        max_length=200,
        description="built-in of pairs (shapes-edges), 'pairs:PATH', or in the service an "
        "uploaded paired or unpaired dataset id",
    )
    image_size: int = Field(
        32,
        strict=True,
        ge=32,
        le=256,
        description="square side the nets work at; inputs are centre-cropped and resized to it",
    )
    channels_a: Literal[1, 3] | None = Field(None, description="domain A's channels (resolved)")
    channels_b: Literal[1, 3] | None = Field(None, description="domain B's channels (resolved)")
    # --- model ---
    generator: GeneratorName = Field(
        "unet", description="unet (pix2pix's) or resnet (CycleGAN's residual-block generator)"
    )
    g_width: int = Field(64, strict=True, ge=4, le=512, description="generator base width")
    d_width: int = Field(64, strict=True, ge=4, le=512, description="PatchGAN base width")
    # --- optimisation ---
    loss: TranslationLoss = "bce"
    batch_size: int = Field(4, strict=True, ge=1, le=1024)
    g_lr: float = Field(2e-4, strict=True, gt=0.0, le=1.0)
    d_lr: float = Field(2e-4, strict=True, gt=0.0, le=1.0)
    g_betas: tuple[StrictFloat, StrictFloat] = (0.5, 0.999)
    d_betas: tuple[StrictFloat, StrictFloat] = (0.5, 0.999)
    steps: int = Field(
        5000, strict=True, ge=1, le=10_000_000, description="generator steps in total"
    )
    lr_schedule: LrSchedule = "linear"
    lr_decay_start: float = Field(
        0.5,
        strict=True,
        ge=0.0,
        lt=1.0,
        description="fraction of steps after which the rates decay (linear or cosine "
        "schedule); 0 where lr_schedule is constant and this is not given",
    )
    ema_decay: float | None = Field(
        None,
        strict=True,
        ge=0.0,
        lt=1.0,
        description="EMA of the generator(s) with this decay; None (default) = off",
    )
    # --- run control (as a noise job's) ---
    seed: int = Field(0, strict=True, ge=0, le=2**63 - 1)
    checkpoint_every: int = Field(500, strict=True, ge=1, le=10_000_000)
    keep_checkpoints: int = Field(5, strict=True, ge=1, le=1000)
    precision: Precision = Field(
        "auto",
        description="auto (default): bf16 where the device runs it natively, else fp32; "
        "resolved when the run starts and stored so",
    )
    device: DeviceName = "auto"
    on_divergence: Literal["fail", "rollback"] = "fail"
    max_rollbacks: int = Field(3, strict=True, ge=1, le=10, description="rollbacks before failing")

    # what the loop reads of any config
    d_steps: ClassVar[int] = 1

    @model_validator(mode="before")
    @classmethod
    def _no_decay_start_for_a_constant_rate(cls, data: Any) -> Any:
        # the default 0.5 belongs to the decaying schedules: a config that asks for a
        # constant rate and says nothing of lr_decay_start is not refused over it (and is
        # stored with 0, so it reads back the same)
        if (
            isinstance(data, dict)
            and data.get("lr_schedule") == "constant"
            and "lr_decay_start" not in data
        ):
            return {**data, "lr_decay_start": 0.0}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TranslationConfig:
        from gan_core.translation.nets import unet_depth  # local: nets import torch

        if self.generator == "unet":
            try:
                unet_depth(self.image_size)
            except ValueError as exc:
                raise ValueError(f"image_size: {exc}") from None
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError(
                "precision: fp16 autocast needs device cuda (or auto); use bf16 on CPU"
            )
        if self.lr_decay_start and self.lr_schedule == "constant":
            raise ValueError("lr_decay_start: only used with lr_schedule linear or cosine")
        return self

    @property
    def resolved(self) -> bool:
        return self.channels_a is not None and self.channels_b is not None

    @property
    def directions(self) -> tuple[str, ...]:
        """The translations a trained model offers."""
        return ("a2b",) if self.kind == "paired" else ("a2b", "b2a")


class PairedConfig(TranslationConfig):
    """pix2pix: G(A) → B, trained with a conditional PatchGAN D(A, B) and L1 to the target."""

    kind: Literal["paired"] = "paired"
    lambda_l1: float = Field(
        100.0, strict=True, ge=0.0, le=10_000.0, description="weight of L1(G(A), B) in G's loss"
    )


class UnpairedConfig(TranslationConfig):
    """CycleGAN: G_ab and G_ba with a PatchGAN per domain, cycle and identity losses."""

    # lambda_identity's default depends on the domains' channels: it is resolved with them,
    # so a resumed run given the same (unresolved) config finds it unchanged
    resolved_fields: ClassVar[tuple[str, ...]] = ("channels_a", "channels_b", "lambda_identity")
    IDENTITY_DEFAULT: ClassVar[float] = 0.5  # the paper's, where the channels allow it

    kind: Literal["unpaired"] = "unpaired"
    generator: GeneratorName = Field(
        "resnet", description="resnet (CycleGAN's residual-block generator) or unet"
    )
    loss: TranslationLoss = "lsgan"
    lambda_cycle: float = Field(
        10.0, strict=True, ge=0.0, le=10_000.0, description="weight of each cycle L1 loss"
    )
    lambda_identity: float | None = Field(
        None,
        strict=True,
        ge=0.0,
        le=100.0,
        description="identity loss weight as a fraction of lambda_cycle (0 = off); it needs "
        "the same channels in both domains. None (default; resolved when training starts): "
        "0.5 where both domains have the same channels, else 0",
    )
    pool_size: int = Field(
        50,
        strict=True,
        ge=0,
        le=1000,
        description="history of generated images D also judges (Shrivastava et al.); 0 = off",
    )
