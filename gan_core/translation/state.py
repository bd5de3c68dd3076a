"""The state of a translation run (nets, optimizers, EMA, image pools, step), its batches, and
how both are saved and restored whole, for a resumed run that equals an uninterrupted one.

Paired (pix2pix): G_ab and a conditional PatchGAN D_b(B | A). Unpaired (CycleGAN): G_ab,
G_ba and an unconditional PatchGAN per domain (D_b judges B, D_a judges A); one Adam over
both generators and one over both discriminators, as in the CycleGAN code.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import Tensor, nn

from gan_core import checkpoint as ckpt
from gan_core.data._base import DatasetError, DatasetInfo, ImageTensorDataset
from gan_core.data.batcher import Batcher
from gan_core.data.pairs import PairDataset
from gan_core.ema import EMA
from gan_core.state import RunState, uses_channels_last
from gan_core.translation.config import TranslationConfig
from gan_core.translation.nets import build_patch_discriminator, build_translator

__all__ = ["ImagePool", "PairBatcher", "TranslationState"]


class PairBatcher:
    """Training batches of a PairDataset's training split: (a, b) in [-1, 1] on the device.

    Paired: one Batcher over A and B stacked on the channel axis, so a pair stays a pair.
    Unpaired: one Batcher per domain, A's seeded with the seed and B's with seed + 1.
    """

    def __init__(
        self, data: PairDataset, batch_size: int, *, seed: int, device: torch.device
    ) -> None:
        (a_train, _), (b_train, _) = data.a.split(), data.b.split()
        self.paired = data.paired
        self.channels_a = int(a_train.shape[1])
        try:
            if data.paired:
                both = torch.cat([a_train, b_train], dim=1)
                info = DatasetInfo(data.name, both.shape[1], None, None)
                self.batchers = {
                    "ab": Batcher(
                        ImageTensorDataset(both, None, info), batch_size, seed=seed, device=device
                    )
                }
            else:
                self.batchers = {
                    name: Batcher(
                        ImageTensorDataset(
                            x, None, DatasetInfo(f"{data.name}:{name}", int(x.shape[1]), None, None)
                        ),
                        batch_size,
                        seed=seed + i,
                        device=device,
                    )
                    for i, (name, x) in enumerate((("a", a_train), ("b", b_train)))
                }
        except DatasetError as exc:  # name the split: a domain's training images are fewer
            raise DatasetError(f"{exc} (the training split, without the held-out images)") from None

    def next(self) -> tuple[Tensor, Tensor]:
        if self.paired:
            x, _ = self.batchers["ab"].next()
            return x[:, : self.channels_a], x[:, self.channels_a :]
        return self.batchers["a"].next()[0], self.batchers["b"].next()[0]

    @property
    def epoch(self) -> float:
        """Passes over the training pairs (unpaired: over domain A's images)."""
        return self.batchers["ab" if self.paired else "a"].epoch

    def reshuffle(self, seed: int) -> None:
        for i, batcher in enumerate(self.batchers.values()):
            batcher.reshuffle(seed + i)

    def state_dict(self) -> dict[str, Tensor]:
        return {
            f"{name}.{k}": v
            for name, batcher in self.batchers.items()
            for k, v in batcher.state_dict().items()
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, batcher in self.batchers.items():
            batcher.load_state_dict(ckpt.sub_state(state, name))


class ImagePool:
    """A history of generated images for D (Shrivastava et al. 2017, as CycleGAN uses it).

    Until full, each new image goes in and is returned; then with probability 1/2 a new image
    replaces a random stored one, which D sees instead. Random draws use the torch RNG, whose
    state every checkpoint saves, and the pool is saved too: a resumed run draws the same.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, batch: Tensor) -> Tensor:
        if self.size == 0:
            return batch
        out = []
        # float32 whatever the precision: the pool (and the checkpoint that saves it) stays
        # the same across a resume that changes precision; autocast casts D's input anyway
        for image in batch.detach().float():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict[str, Tensor]:
        return {"images": torch.cat(self.images)} if self.images else {}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device) -> None:
        stored = state.get("images")
        self.images = [] if stored is None else list(stored.to(device).split(1))


class TranslationState(RunState):
    """Nets, optimizers, EMA, pools and step of one translation run."""

    def __init__(self, config: TranslationConfig, device: torch.device):
        if config.channels_a is None or config.channels_b is None:
            raise ValueError("the config's channels_a and channels_b must be resolved first")
        self.config, self.device = config, device
        torch.manual_seed(config.seed)
        ca, cb, size = config.channels_a, config.channels_b, config.image_size
        paired = config.kind == "paired"

        def translator(c_in: int, c_out: int) -> nn.Module:
            return build_translator(config.generator, c_in, c_out, size, config.g_width)

        self.generators: dict[str, nn.Module] = {"G_ab": translator(ca, cb)}
        self.discriminators: dict[str, nn.Module] = {
            "D_b": build_patch_discriminator(
                cb, size, config.d_width, condition_channels=ca if paired else 0
            )
        }
        if not paired:
            self.generators["G_ba"] = translator(cb, ca)
            self.discriminators["D_a"] = build_patch_discriminator(ca, size, config.d_width)
        self.channels_last = uses_channels_last(config, device)
        for net in self.nets.values():
            net.to(device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(
            itertools.chain(*(g.parameters() for g in self.generators.values())),
            lr=config.g_lr,
            betas=config.g_betas,
        )
        self.opt_d = torch.optim.Adam(
            itertools.chain(*(d.parameters() for d in self.discriminators.values())),
            lr=config.d_lr,
            betas=config.d_betas,
        )
        self.emas = (
            {name: EMA(g, config.ema_decay, None) for name, g in self.generators.items()}  # type: ignore[arg-type]
            if config.ema_decay is not None
            else {}
        )
        pool = getattr(config, "pool_size", 0)
        self.pools = {"pool_a": ImagePool(pool), "pool_b": ImagePool(pool)} if not paired else {}
        self.step = 0
        self.rollbacks = 0

    @property
    def nets(self) -> dict[str, nn.Module]:
        return {**self.generators, **self.discriminators}

    def train_mode(self) -> None:
        for net in self.nets.values():
            net.train()

    def update_ema(self) -> None:
        for name, ema in self.emas.items():
            ema.update(self.generators[name], self.step)

    def _modules(self) -> dict[str, nn.Module]:
        return {**self.nets, **{f"{name}_ema": e.model for name, e in self.emas.items()}}

    def save(
        self, run_dir: Path, batcher: PairBatcher, losses: dict[str, float]
    ) -> ckpt.CheckpointInfo:
        gen: dict[str, Tensor] = {}
        for name, net in self.generators.items():
            gen.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        for name, ema in self.emas.items():
            gen.update({f"{name}_ema.{k}": v for k, v in ema.model.state_dict().items()})
        state: dict[str, Tensor] = {}
        for name, net in self.discriminators.items():
            state.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        for name, pool in self.pools.items():
            state.update({f"{name}.{k}": v for k, v in pool.state_dict().items()})
        return self._write(run_dir, batcher, losses, gen, state)

    def restore(self, ckpt_dir: Path, batcher: PairBatcher) -> None:
        meta, gen, state = ckpt.load_checkpoint(ckpt_dir)
        for name, net in self.generators.items():
            net.load_state_dict(ckpt.sub_state(gen, name))
        for name, ema in self.emas.items():
            ema.model.load_state_dict(
                ckpt.sub_state(gen, f"{name}_ema") or ckpt.sub_state(gen, name)
            )
        for name, net in self.discriminators.items():
            net.load_state_dict(ckpt.sub_state(state, name))
        for name, pool in self.pools.items():
            pool.load_state_dict(ckpt.sub_state(state, name), self.device)
        self._restore_run(meta, state, batcher)
