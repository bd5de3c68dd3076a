"""Scoring translation checkpoints (pix2pix "paired", CycleGAN "unpaired") on the held-out split.

A translation model is scored on the images its training never saw: the dataset's fixed
validation split (``PairDataset``: 5% of the pairs, or of each domain's images). For each
direction the model offers, the held-out images of the *source* domain are translated (eval
mode, uint8 out, as a user gets them) and compared with real images of the *target* domain.

Feature space. Each domain is treated as an unlabelled image dataset of its **training**
split (``domain_dataset``): it gets the extractor the service trains for any unlabelled
dataset (rotation prediction, gan_core.metrics.features, with the same bounded recipe) and
that extractor's real-data reference (``build_reference``). Translations into B are embedded
with B's extractor, translations into A with A's: a translation is judged by what the target
domain's own images look like. Both are built once per domain (content-keyed like any
dataset's scorer: ``scorer_key(domain_dataset(...))``) and reused for every checkpoint.

Reference. The target domain's real training images: up to ``REFERENCE_STATS_SIZE`` (10,000,
a seeded sample beyond that) for the mean and covariance, ``REFERENCE_FEATURES`` (5,000) of
them for KID. Not the held-out targets: there are few of them (200 of shapes-edges' 4,000
pairs), and an FD against 200 images would mostly measure their own sampling noise. The
training targets are the target distribution, and the extractor never saw the held-out ones.

The result of ``TranslationScorer.score(ckpt_dir)`` (JSON-able; lower is better unless said):

- ``fd``: Fréchet distance between the features of the translated held-out A images and the
  reference of B's training images, in B's extractor's feature space. It depends on the
  number of images scored (its bias shrinks as 1/N), so it compares between checkpoints of
  one dataset, not between datasets. A paired job's ``best`` follows it.
- ``kid``, ``kid_std``: KID (cubic-kernel unbiased MMD², as gan_core.metrics.distances.kid),
  mean and std over 100 seeded subsets, of the same two feature sets.
- paired only, between each translated held-out A image and its held-out B partner (uint8
  pixels), averaged over the held-out pairs:
  ``l1``: mean absolute difference with pixels scaled to [-1, 1], the scale of pix2pix's L1
  term (tanh outputs against targets in [-1, 1]); halve it for a fraction of the full range.
  ``psnr`` (higher is better): 10 log10(255² / MSE) per image on [0, 255], in dB, each image
  capped at ``PSNR_CAP`` (an exact copy), then averaged.
  ``ssim`` (higher is better, at most 1): SSIM (Wang et al. 2004) with an 11x11 Gaussian
  window of sigma 1.5, K1 0.01, K2 0.03, data range 255, over the valid window positions,
  per channel, then averaged over channels, positions and images.
- unpaired only: ``fd_b2a``, ``kid_b2a``, ``kid_std_b2a``: the same for the B → A direction
  (translated held-out B images against A's training images, in A's feature space).
- ``ema``, ``raw``: the numbers above for each generator the checkpoint holds (``ema`` only
  when the run kept an EMA); the top-level ones are those of ``preferred``, the one with
  the lower ``selection_key``: ``fd`` (paired), or both directions' (unpaired).
- ``baseline``: the same numbers for what a model would have to beat, fixed per dataset:
  ``fd``/``kid`` (and ``fd_b2a``/``kid_b2a``) of the held-out *real* target images (as many
  as are translated) against the same reference, the floor a perfect model would reach;
  ``l1``/``psnr``/``ssim`` of copying the input (a grey input repeated over three channels,
  a colour one turned grey by ITU-R 601 luma), the score of doing nothing.
- ``num_inputs`` (held-out images translated per direction), ``extractor`` (its kind),
  ``kind`` (paired | unpaired), ``seconds`` (time taken).

``selection_key`` is the number ``preferred`` and a job's ``best`` follow. Paired: ``fd``.
Unpaired: the mean over both directions of each one's ``fd`` divided by its baseline ``fd``
(``fd / baseline fd`` and ``fd_b2a / baseline fd_b2a``), so that a model whose B → A collapses
is not chosen for its A → B alone. Each FD is in its own domain's feature space, whose scale
is the extractor's (a sum of FDs would let the larger-scaled domain decide); over the floor
of the same space, each is scale-free, 1 being as close as the held-out real images, and a
direction's bias from its number of images is in its floor too. The baselines are fixed per
dataset, so within a job this is a fixed weighting of the two FDs, and orders checkpoints
consistently. Where a floor is not positive (it never is zero with >= 2 distinct images),
the plain mean of the two FDs.

Deterministic: the same checkpoint gives the same numbers (eval-mode translation, fixed
held-out split, seeded KID subsets).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gan_core import checkpoint as ckpt
from gan_core.data._base import DatasetInfo, ImageTensorDataset
from gan_core.data.pairs import Domain, PairDataset
from gan_core.metrics.distances import frechet_distance, kid, mean_cov
from gan_core.metrics.features import (
    FeatureClassifier,
    extract_features,
    train_extractor,
)
from gan_core.metrics.files import dataset_fingerprint, extractor_digest
from gan_core.metrics.pixels import PSNR_CAP, as_channels, l1, psnr, ssim
from gan_core.metrics.scorer import SCORE_SEED, Log, build_scorer, load_scorer, scorer_key
from gan_core.metrics.scoring import RealReference, _derived_seed, build_reference
from gan_core.translation.config import TranslationConfig
from gan_core.translation.inference import load_translator, translate

__all__ = [
    "PSNR_CAP",
    "TranslationScorer",
    "domain_dataset",
    "psnr",
    "selection_key",
    "ssim",
    "target_sides",
    "translation_scorer_keys",
]

Side = Literal["a", "b"]
# (source, target) domain of each direction
_SIDES: dict[str, tuple[Side, Side]] = {"a2b": ("a", "b"), "b2a": ("b", "a")}


def selection_key(numbers: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> float:
    """The number (lower is better) a translator's ``preferred`` and its job's ``best`` follow,
    from one generator's numbers (``fd``; ``fd_b2a`` when unpaired) and the scorer's
    ``baseline``: ``fd`` when there is no B -> A direction; else the mean of each direction's
    FD over its baseline FD (the plain mean of the two FDs where a baseline is not > 0)."""
    fd, fd_b2a = float(numbers["fd"]), numbers.get("fd_b2a")
    if fd_b2a is None:
        return fd
    floors = [float((baseline or {}).get(name) or 0.0) for name in ("fd", "fd_b2a")]
    if all(math.isfinite(f) and f > 0 for f in floors):
        return (fd / floors[0] + float(fd_b2a) / floors[1]) / 2
    return (fd + float(fd_b2a)) / 2


# --------------------------------------------------------------------------- domains


def target_sides(data: PairDataset) -> tuple[Side, ...]:
    """The domains translations are scored in: B (paired), B and A (unpaired)."""
    return ("b",) if data.paired else ("b", "a")


def domain_dataset(data: PairDataset, side: Side) -> ImageTensorDataset:
    """One domain's training split (held-out images left out) as an unlabelled image dataset:
    what its extractor is trained on and its reference computed from. The service can get its
    scorer like any image dataset's (``Scorers.for_dataset``), keyed by content."""
    domain = data.a if side == "a" else data.b
    train, _ = domain.split()
    info = DatasetInfo(f"{data.name}:{side}", domain.channels, None, int(train.shape[-1]))
    return ImageTensorDataset(train, None, info)


def translation_scorer_keys(data: PairDataset) -> dict[Side, str]:
    """``scorer_key`` of each target domain's training split: where its extractor is cached."""
    return {side: scorer_key(domain_dataset(data, side)) for side in target_sides(data)}


# --------------------------------------------------------------------------- the scorer


class TranslationScorer:
    """Scores a translation checkpoint on a PairDataset's held-out split (see the module doc).

    ``domains`` maps each target side ("b"; and "a" for unpaired data) to the (extractor,
    reference) of that domain's training split, as ``build_scorer``/``load_scorer`` or the
    service's ``Scorers.for_dataset(domain_dataset(data, side), device)`` give them. Build
    one per job (the baselines are computed here, once) and call ``score`` per checkpoint.
    """

    def __init__(
        self,
        data: PairDataset,
        domains: Mapping[str, tuple[FeatureClassifier, RealReference]],
        device: torch.device | str = "cpu",
        *,
        kid_subsets: int = 100,
        batch_size: int = 32,
    ) -> None:
        self.data, self.device = data, torch.device(device)
        self.kid_subsets, self.batch_size = kid_subsets, batch_size
        self.directions: tuple[str, ...] = ("a2b",) if data.paired else ("a2b", "b2a")
        self.domains: dict[str, tuple[FeatureClassifier, RealReference]] = {}
        for side in target_sides(data):
            if side not in domains:
                raise ValueError(f"no extractor and reference for domain {side.upper()}")
            extractor, reference = domains[side]
            images = domain_dataset(data, side).images
            if reference.extractor_digest != extractor_digest(extractor):
                raise ValueError(f"domain {side.upper()}: the reference is another extractor's")
            if reference.image_shape != tuple(images.shape[1:]):
                raise ValueError(
                    f"domain {side.upper()}: the reference is of {reference.image_shape} "
                    f"images, the domain's are {tuple(images.shape[1:])}"
                )
            fingerprint = reference.dataset_fingerprint
            if fingerprint is not None and fingerprint != dataset_fingerprint(images, None):
                raise ValueError(
                    f"domain {side.upper()}: the reference was made from other images than "
                    "the domain's training split"
                )
            self.domains[side] = (extractor.eval(), reference)
        # held-out (inputs, targets) per direction: paired targets are the inputs' partners
        self.held_out: dict[str, tuple[Tensor, Tensor]] = {}
        for direction in self.directions:
            src, dst = _SIDES[direction]
            self.held_out[direction] = (self._domain(src).split()[1], self._domain(dst).split()[1])
        self.baseline = self._baseline()

    def _domain(self, side: Side) -> Domain:
        return self.data.a if side == "a" else self.data.b

    @classmethod
    def fit(
        cls,
        data: PairDataset,
        device: torch.device | str = "cpu",
        *,
        epochs: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> TranslationScorer:
        """Train each target domain's extractor and reference in memory (nothing saved).

        epochs None: the service's recipe (``default_epochs``); fewer only for quick tests.
        """
        domains: dict[str, tuple[FeatureClassifier, RealReference]] = {}
        for side in target_sides(data):
            ds = domain_dataset(data, side)
            extractor = train_extractor(ds.images, epochs=epochs, seed=seed, device=device)
            fingerprint = dataset_fingerprint(ds.images, None)
            domains[side] = (
                extractor,
                build_reference(extractor, ds.images, dataset_fingerprint=fingerprint),
            )
        return cls(data, domains, device, **kwargs)

    @classmethod
    def from_directory(
        cls,
        root: Path,
        data: PairDataset,
        device: torch.device | str = "cpu",
        log: Log = print,
        **kwargs: Any,
    ) -> TranslationScorer:
        """Each target domain's extractor and reference from ``root/<scorer key>``, as
        ``ganforge train --score`` keeps a dataset's; built and saved there when missing."""
        dev = torch.device(device)
        domains: dict[str, tuple[FeatureClassifier, RealReference]] = {}
        for side, key in translation_scorer_keys(data).items():
            ds = domain_dataset(data, side)
            directory = Path(root) / key
            domains[side] = load_scorer(directory, ds, dev, log) or build_scorer(
                directory, ds, dev, log
            )
        return cls(data, domains, dev, **kwargs)

    # ----------------------------------------------------------------- scoring

    def _distances(self, direction: str, translated: Tensor) -> dict[str, float]:
        extractor, reference = self.domains[_SIDES[direction][1]]
        feats = extract_features(extractor, translated)
        mu, sigma = mean_cov(feats)
        kid_mean, kid_std = kid(
            reference.features,
            feats,
            subset_size=1000,
            subsets=self.kid_subsets,
            seed=_derived_seed(SCORE_SEED, f"kid-{direction}"),
        )
        suffix = "" if direction == "a2b" else f"_{direction}"
        return {
            f"fd{suffix}": frechet_distance(reference.mu, reference.sigma, mu, sigma),
            f"kid{suffix}": kid_mean,
            f"kid_std{suffix}": kid_std,
        }

    def _pixels(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        l1s, psnrs, ssims = [], [], []
        for i in range(0, outputs.shape[0], self.batch_size):
            x, y = outputs[i : i + self.batch_size], targets[i : i + self.batch_size]
            l1s.append(l1(x, y))
            psnrs.append(psnr(x, y))
            ssims.append(ssim(x, y))
        return {
            "l1": torch.cat(l1s).mean().item(),
            "psnr": torch.cat(psnrs).mean().item(),
            "ssim": torch.cat(ssims).mean().item(),
        }

    def _baseline(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for direction, (inputs, targets) in self.held_out.items():
            out.update(self._distances(direction, targets))  # real images: the floor
            if self.data.paired:
                out.update(self._pixels(as_channels(inputs, targets.shape[1]), targets))
        return out

    def _translate(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return torch.cat(
            [
                translate(model, inputs[i : i + self.batch_size])
                for i in range(0, inputs.shape[0], self.batch_size)
            ]
        )

    def score_models(self, models: Mapping[str, nn.Module]) -> dict[str, float]:
        """The numbers of one set of translators (direction -> model in eval mode)."""
        out: dict[str, float] = {}
        for direction in self.directions:
            inputs, targets = self.held_out[direction]
            translated = self._translate(models[direction], inputs)
            if tuple(translated.shape[1:]) != tuple(targets.shape[1:]):
                raise ValueError(
                    f"{direction}: the model makes {tuple(translated.shape[1:])} images, the "
                    f"dataset's target domain has {tuple(targets.shape[1:])}"
                )
            out.update(self._distances(direction, translated))
            if self.data.paired:
                out.update(self._pixels(translated, targets))
        return out

    def score(self, ckpt_dir: str | Path) -> dict[str, Any]:
        """JSON-able scores of a translation checkpoint's EMA (if kept) and raw translators
        on the held-out split; the top level holds the ``preferred`` one's (the lower
        ``selection_key``)."""
        t0 = time.monotonic()
        config = ckpt.job_config_from_meta(ckpt.read_meta(ckpt_dir, verify=False))
        if not isinstance(config, TranslationConfig):
            raise ckpt.CheckpointError("not a translation checkpoint: score it as a generator")
        if config.kind != self.data.pairing:
            raise ValueError(f"a {config.kind} checkpoint, but {self.data.pairing} data")
        model_io = (config.channels_a, config.channels_b, config.image_size)
        data_io = (self.data.a.channels, self.data.b.channels, int(self.data.a.images.shape[-1]))
        if model_io != data_io:
            raise ValueError(
                f"the checkpoint's model is for (channels_a, channels_b, image_size) {model_io}, "
                f"the dataset has {data_io}"
            )
        out: dict[str, Any] = {
            "kind": config.kind,
            "extractor": self.domains["b"][0].kind,
            "num_inputs": {d: int(self.held_out[d][0].shape[0]) for d in self.directions},
        }
        for name in ("ema", "raw") if config.ema_decay is not None else ("raw",):
            models = {
                d: load_translator(ckpt_dir, d, ema=name == "ema", device=self.device)
                for d in self.directions
            }
            out[name] = self.score_models(models)
        preferred = min(
            (n for n in ("ema", "raw") if n in out),
            key=lambda n: selection_key(out[n], self.baseline),
        )
        out.update(out[preferred])
        out["preferred"] = preferred
        out["baseline"] = dict(self.baseline)
        out["seconds"] = round(time.monotonic() - t0, 3)
        if not all(math.isfinite(v) for v in out[preferred].values()):
            raise ValueError(f"non-finite scores: {out[preferred]}")
        return out
