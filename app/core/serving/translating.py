"""Translating over HTTP: a checkpoint's translator applied to a posted image, and a grid of its
translations of the dataset's held-out validation examples.

Translating is sampling with an input, so it runs on the sampling machinery
(app.core.serving.sampling): checkpoints resolved the same way ({id|latest|best}, the owner's
only), the same PNG cache, single flight, fair render slots and threads, and the same per-key
limiter, charged by the pixels generated (one image_size² image per translation, n of them
for a grid). Concurrent translations by one model run as a batch
(app.core.serving.translate_batcher), with the same bytes as alone. Translators are kept loaded in a bounded LRU of their own, as many as generators.
The image is read under the upload caps (app.core.serving.image_input). Every response has a
strong ETag: the checkpoint's weights, the direction, the weights used (EMA or raw) and the
input's sha256 (or the dataset and n for a grid) give the same PNG bytes.

A translation job's held-out examples are read by app.core.serving.translation_examples.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from app.core.access.auth import Principal
from app.core.artifacts import checkpoints
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput
from app.core.integrations.telemetry import CACHE
from app.core.models import Checkpoint, Dataset
from app.core.serving.cache import LRU, TTLCache
from app.core.serving.image_input import FIELD, ImageLimits, decode, open_image
from app.core.serving.sampling import MOVING_REFS, EmaChoice, Png, SamplingService, use_ema
from app.core.serving.translate_batcher import TranslateBatcher
from app.core.serving.translation_examples import validation_examples
from gan_core.checkpoint import CheckpointError
from gan_core.data import DatasetError
from gan_core.translation.inference import load_translator, prepare_image, translate

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from gan_core.translation.config import TranslationConfig

T = TypeVar("T")
# Bumped when the same request gives other bytes than before, so no cached ETag names
# other pixels.
TRANSLATE_VERSION = 1
MAX_GRID_EXAMPLES = 64  # rows of translations.png
EXAMPLES_CACHE_BYTES = 64 << 20  # held-out examples kept decoded (25 MB at 64 of 256 px RGB)
GAP = 2  # px between and around the images of a grid, as in samples.png
TRANSLATION_KINDS = ("paired", "unpaired")
NOT_A_TRANSLATOR = "it samples (samples.png); it does not translate"


def directions_of(kind: str) -> tuple[str, ...]:
    """The directions a kind of model translates (gan_core TranslationConfig.directions)."""
    return ("a2b", "b2a") if kind == "unpaired" else ("a2b",)


# --------------------------------------------------------------------------- pictures


def image_png(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) as a PNG: mode L for one channel, RGB for three."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
    buf = io.BytesIO()
    # No text chunks or timestamps and a fixed compression: the bytes depend on pixels alone.
    im.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def rows_png(columns: list[torch.Tensor]) -> bytes:
    """Columns of uint8 (k, C, S, S) images side by side, one row per example, on black with
    GAP px between and around them; an RGB PNG (grey images shown grey)."""
    k, _, s, _ = columns[0].shape
    cell = s + GAP
    canvas = torch.zeros(3, k * cell + GAP, len(columns) * cell + GAP, dtype=torch.uint8)
    for j, column in enumerate(columns):
        rgb = column.expand(-1, 3, -1, -1) if column.shape[1] == 1 else column
        for i in range(k):
            canvas[:, GAP + i * cell : GAP + i * cell + s, GAP + j * cell : GAP + j * cell + s] = (
                rgb[i]
            )
    return image_png(canvas)


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class _Found:
    row: Checkpoint  # detached from its session
    kind: str  # noise | paired | unpaired
    image_size: int
    upload: Dataset | None  # the job's uploaded dataset (detached), if it has one
    dataset: str  # config.dataset: a built-in's name, or the upload's id


def _facts(model: nn.Module) -> tuple[TranslationConfig, int, int]:
    """What load_translator set on a translator: its config, input and output channels."""
    attrs = vars(model)
    return attrs["config"], int(attrs["in_channels"]), int(attrs["out_channels"])


def _nbytes(examples: tuple[torch.Tensor, torch.Tensor | None]) -> int:
    return sum(t.nbytes for t in examples if t is not None)


def _etag(*parts: object) -> str:
    raw = json.dumps(parts, default=str)
    return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


def _matches(etag: str, if_none_match: str | None) -> bool:
    return bool(if_none_match) and etag in [t.strip() for t in (if_none_match or "").split(",")]


class Translations:
    """The translation endpoints' logic, minus HTTP."""

    def __init__(self, sampling: SamplingService):
        self.sampling = sampling
        self.settings, self.store = sampling.settings, sampling.store
        self.limits = ImageLimits.of(sampling.settings)
        self.translators: LRU[nn.Module] = LRU(sampling.settings.generator_cache_size)
        # (dataset, size, direction, channels) -> the first MAX_GRID_EXAMPLES held-out examples
        self.examples: LRU[tuple[torch.Tensor, torch.Tensor | None]] = LRU(
            8, max_weight=EXAMPLES_CACHE_BYTES, weigh=_nbytes
        )
        self.refs: TTLCache[_Found] = TTLCache(ttl=1.0)
        self.grid_images = 0  # held-out examples put through a translator
        # concurrent translate requests for one model: one forward pass where bytes allow
        self.batcher = TranslateBatcher(sampling.slots, sampling.sampler.pool, image_png)

    # -- checkpoints and models

    def _resolve(self, job_id: str, ref: str, owner_id: str | None) -> _Found:
        with session_scope(self.settings.resolved_database_url) as session:
            row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ref, owner_id=owner_id)
            config = row.job.config or {}
            upload = session.get(Dataset, row.job.dataset_id) if row.job.dataset_id else None
            session.expunge(row)
            if upload is not None:
                session.expunge(upload)
        kind = str(config.get("kind") or "noise")
        return _Found(
            row, kind, int(config.get("image_size") or 0), upload, str(config.get("dataset"))
        )

    async def _checkpoint(
        self, job_id: str, ref: str, principal: Principal, direction: str
    ) -> _Found:
        key = (job_id, ref, principal.scope)
        found = self.refs.get(key) if ref not in MOVING_REFS else None
        if found is None:
            found = await asyncio.to_thread(self._resolve, job_id, ref, principal.scope)
            if ref not in MOVING_REFS:
                self.refs.put(key, found)
        if found.kind not in TRANSLATION_KINDS:
            raise Conflict(
                f"checkpoint {found.row.id} of job {job_id} holds a noise-to-image generator: "
                f"{NOT_A_TRANSLATOR}"
            )
        if direction not in directions_of(found.kind):
            raise InvalidInput(
                f"direction: a {found.kind} model translates "
                f"{' or '.join(directions_of(found.kind))}, not {direction!r}",
                field="direction",
            )
        return found

    def translator(self, path: Path, direction: str, ema: bool) -> nn.Module:
        return self.translators.get_or_load(
            (str(path), direction, ema), lambda: load_translator(path, direction, ema=ema)
        )

    async def _load(self, found: _Found, direction: str, ema: bool) -> nn.Module:
        path = checkpoints.checkpoint_path(self.store, found.row)
        try:
            return await asyncio.to_thread(self.translator, path, direction, ema)
        except CheckpointError as exc:
            raise Conflict(f"checkpoint {found.row.id} cannot be loaded: {exc}") from exc

    @property
    def translated(self) -> int:
        """Images put through a translator (tests read it)."""
        return self.grid_images + self.batcher.images

    def _run(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        self.grid_images += images.shape[0]
        return translate(model, images)

    async def _in_slot(self, owner: str, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` on a render thread, in the owner's fair turn for a slot."""
        loop = asyncio.get_running_loop()
        async with self.sampling.slots.slot(owner):
            return await loop.run_in_executor(self.sampling.sampler.pool, work, *args)

    def _fixed(self, ref: str, row: Checkpoint, ema: EmaChoice) -> bool:
        # as samples: a fixed id names fixed weights unless 'auto' may still change its pick
        return ref not in MOVING_REFS and not (
            ema == EmaChoice.auto and row.score_status == "pending"
        )

    async def _cached_or(
        self, etag: str, key: str, pixels: int, work: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """A PNG from the cache, or charged by its pixels and made once however many ask."""
        cached = self.sampling.sampler.pngs.get(etag)
        CACHE.labels("hit" if cached is not None else "miss").inc()
        if cached is not None:
            return cached
        await self.sampling.limits.render(key, pixels)
        return await self.sampling.flights.run(etag, work)

    # -- the endpoints

    async def translate(
        self,
        *,
        job_id: str,
        ref: str,
        read_image: Callable[[], Awaitable[bytes]],
        direction: str,
        ema: EmaChoice,
        principal: Principal,
        if_none_match: str | None = None,
    ) -> Png:
        """The posted image translated at the model's image_size, as a PNG. The checkpoint is
        resolved and checked before ``read_image`` reads the body."""
        found = await self._checkpoint(job_id, ref, principal, direction)
        image = await read_image()
        row, use = found.row, use_ema(found.row, ema)
        digest = hashlib.sha256(image).hexdigest()
        etag = _etag(
            "translate", checkpoints.content_hash(row), TRANSLATE_VERSION, direction, use, digest
        )
        unchanged = Png(etag, None, row.id, row.step, immutable=self._fixed(ref, row, ema))
        if _matches(etag, if_none_match):
            return unchanged
        opened = open_image(image, self.limits)  # the header only: the caps before decoding

        async def work() -> bytes:
            model = await self._load(found, direction, use)
            x = await self._in_slot(principal.owner_id, self._prepare, model, opened)
            key = (str(checkpoints.checkpoint_path(self.store, row)), direction, use)
            data = await self.batcher.translate(key, model, principal.owner_id, x)
            self.sampling.sampler.pngs.put(etag, data)
            return data

        body = await self._cached_or(
            etag, principal.key_id or principal.owner_id, found.image_size**2, work
        )
        return replace(unchanged, body=body)

    @staticmethod
    def _prepare(model: nn.Module, opened: PILImage) -> torch.Tensor:
        """The posted image as the model's input, uint8 (C, S, S), or a 4xx naming it."""
        config, channels, _ = _facts(model)
        try:
            return prepare_image(decode(opened), config.image_size, channels)
        except DatasetError as exc:
            raise InvalidInput(str(exc), field=FIELD) from exc

    async def translations_png(
        self,
        *,
        job_id: str,
        ref: str,
        n: int,
        direction: str,
        ema: EmaChoice,
        principal: Principal,
        if_none_match: str | None = None,
    ) -> Png:
        """A grid of the first n held-out examples: input | output (| target, for pairs)."""
        if n > MAX_GRID_EXAMPLES:
            raise InvalidInput(f"n must be <= {MAX_GRID_EXAMPLES}", field="n")
        found = await self._checkpoint(job_id, ref, principal, direction)
        if found.upload is None and found.dataset.startswith("ds_"):
            raise Conflict(
                f"job {job_id}'s dataset {found.dataset} was deleted: there are no held-out "
                "examples to show"
            )
        row, use = found.row, use_ema(found.row, ema)
        data_key = found.upload.id if found.upload is not None else found.dataset
        etag = _etag(
            "translations",
            checkpoints.content_hash(row),
            TRANSLATE_VERSION,
            direction,
            use,
            data_key,
            n,
        )
        unchanged = Png(etag, None, row.id, row.step, immutable=self._fixed(ref, row, ema))
        if _matches(etag, if_none_match):
            return unchanged

        async def work() -> bytes:
            model = await self._load(found, direction, use)
            inputs, targets = await self._examples(found, model, direction, data_key)
            inputs, targets = inputs[:n], None if targets is None else targets[:n]
            outputs = await self._in_slot(principal.owner_id, self._run, model, inputs)
            columns = [inputs, outputs] + ([targets] if targets is not None else [])
            data = await self._in_slot(principal.owner_id, rows_png, columns)
            self.sampling.sampler.pngs.put(etag, data)
            return data

        body = await self._cached_or(
            etag, principal.key_id or principal.owner_id, n * found.image_size**2, work
        )
        return replace(unchanged, body=body)

    async def _examples(
        self, found: _Found, model: nn.Module, direction: str, data_key: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        config, c_in, c_out = _facts(model)
        channels = (c_in, c_out)
        key = (data_key, config.image_size, direction, channels)

        def load() -> tuple[torch.Tensor, torch.Tensor | None]:
            return validation_examples(
                self.store, config, found.upload, direction, MAX_GRID_EXAMPLES, channels
            )

        try:
            return await asyncio.to_thread(self.examples.get_or_load, key, load)
        except DatasetError as exc:
            raise Conflict(f"the held-out examples of {data_key} cannot be read: {exc}") from exc
