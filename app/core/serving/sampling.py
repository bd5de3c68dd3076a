"""Serving samples: resolve the checkpoint, check the request against the model, render a PNG.

``Sampler`` keeps bounded LRUs of loaded generators and rendered PNGs (concurrent requests for
one checkpoint load it once) and the few threads torch runs on. ``SamplingService`` is what
the API calls: it resolves a checkpoint reference in one short database session, answers
repeats from the caches without a thread hop, joins identical renders already in flight,
charges a render to the key by its pixels (app.core.serving.ratelimit), and renders in chunks that
take turns across owners for the render slots (app.core.serving.render_queue).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import torch

from app.core.access.auth import Principal
from app.core.artifacts import checkpoints
from app.core.artifacts.store import ArtifactStore
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput
from app.core.integrations.telemetry import CACHE, RENDER_SECONDS
from app.core.models import Checkpoint
from app.core.serving.cache import LRU, TTLCache
from app.core.serving.ratelimit import SamplingLimits
from app.core.serving.render_queue import FairSlots, SingleFlight
from app.core.settings import Settings
from gan_core import inference
from gan_core.checkpoint import CheckpointError, load_generator
from gan_core.nets import Generator
from gan_core.sampling import interpolation_inputs, png_grid, sample_inputs


class EmaChoice(StrEnum):
    auto = "auto"
    true = "true"
    false = "false"


# Bumped when the same request renders different bytes than before (2: the folded
# gan_core.inference path; 3: bf16 weights instead of autocast), so that no client's cached
# ETag names other pixels.
RENDER_VERSION = 3
MOVING_REFS = ("latest", "best")  # resolve to another checkpoint as training goes on


def use_ema(row: Checkpoint, choice: EmaChoice | bool) -> bool:
    """Whether a request's ``ema`` choice means the averaged generator of this checkpoint."""
    if isinstance(choice, bool):
        return choice
    if choice == EmaChoice.auto:
        return row.preferred != "raw"
    return choice == EmaChoice.true


@dataclass(frozen=True)
class SampleRequest:
    kind: str  # "samples" | "interpolation"
    n: int = 64
    seed: int = 0
    nrow: int = 8
    label: int | None = None
    ema: EmaChoice | bool = EmaChoice.auto  # resolved to a bool per checkpoint before rendering
    truncation: float | None = None
    from_seed: int = 0
    to_seed: int = 1
    steps: int = 8


class Sampler:
    """Loaded generators and rendered PNGs (bounded LRUs), and the threads that render."""

    def __init__(
        self,
        generator_cache_size: int = 8,
        png_cache_size: int = 256,
        png_cache_bytes: int = 128 << 20,
        render_slots: int | None = None,
        precision: str = "auto",
    ):
        # Generators are served folded and laid out for the CPU (gan_core.inference), in the
        # precision this machine is fastest at; the mode is part of every ETag.
        self.mode = inference.resolve_mode(precision)
        self.generators: LRU[Generator] = LRU(generator_cache_size)
        self.pngs: LRU[bytes] = LRU(png_cache_size, max_weight=png_cache_bytes, weigh=len)
        # Renders running at once. Each already uses torch's intra-op threads; more renders
        # than cores / threads only fight over the cores (16 concurrent renders measured
        # 0.8x the throughput of one at a time on 2 cores), so the rest wait their turn.
        if render_slots is None:
            render_slots = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
        self.slots = render_slots
        # Torch work runs on these few threads only. Each thread that allocates big tensors
        # gets a glibc malloc arena that keeps its freed memory; spread over the 40 threads of
        # the default pool, RSS grew by ~700 MB over 600 distinct n=256 renders.
        self.pool = ThreadPoolExecutor(render_slots, thread_name_prefix="ganforge-render")
        self.renders = 0  # chunks rendered (tests and benchmarks read it)

    def etag(self, checkpoint_sha: str, req: SampleRequest) -> str:
        """A strong validator: same checkpoint bytes, mode and parameters -> same PNG bytes."""
        raw = f"{checkpoint_sha}|{RENDER_VERSION}|{self.mode}|{req}"
        return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'

    def generator(self, ckpt_dir: Path, ema: bool) -> Generator:
        return self.generators.get_or_load(
            (str(ckpt_dir), ema),
            lambda: inference.prepare(load_generator(ckpt_dir, ema=ema), self.mode),
        )

    @staticmethod
    def inputs(G: Generator, req: SampleRequest) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latents and labels a request renders (seeded: the same every time)."""
        if req.kind == "interpolation":
            return interpolation_inputs(G, req.from_seed, req.to_seed, req.steps, label=req.label)
        return sample_inputs(G, req.n, req.seed, labels=req.label, truncation=req.truncation)

    def generate(self, G: Generator, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        self.renders += 1
        return inference.run(G, z, labels)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Png:
    """A rendered (or unchanged) image and what the response says about it."""

    etag: str
    body: bytes | None  # None: the client's If-None-Match already names it (304)
    checkpoint_id: str
    step: int
    immutable: bool  # a fixed checkpoint id names immutable weights; 'latest' and 'best' move


@dataclass(frozen=True)
class _Ref:
    row: Checkpoint
    conditional: bool
    num_classes: int | None
    image_size: int
    kind: str = "noise"  # a translator's (paired, unpaired) does not sample from noise


def refuse_translator(job_id: str, ref: str, kind: str, what: str) -> None:
    """A clear 409 for a noise-only endpoint on a translation job's checkpoint."""
    if kind in ("paired", "unpaired"):
        raise Conflict(
            f"job {job_id} trains a {kind} translation model: it translates images (POST "
            f"/v1/jobs/{job_id}/checkpoints/{ref}/translate with an image); it has no {what}"
        )


class SamplingService:
    """The sampling endpoints' logic, minus HTTP."""

    def __init__(self, settings: Settings, store: ArtifactStore, sampler: Sampler):
        self.settings, self.store, self.sampler = settings, store, sampler
        # (job, checkpoint id, owner scope) -> _Ref for 1 s: a repeated sample request for a
        # fixed checkpoint is answered without a database round trip.
        self.refs: TTLCache[_Ref] = TTLCache(ttl=1.0)
        self.limits = SamplingLimits(settings)
        self.slots = FairSlots(sampler.slots)
        self.flights: SingleFlight[bytes] = SingleFlight()

    def check(self, req: SampleRequest) -> None:
        """The server's own bounds (settings), beyond the API's static ones."""
        if req.kind == "samples" and req.n > self.settings.max_samples:
            raise InvalidInput(f"n must be <= {self.settings.max_samples}", field="n")
        if req.kind == "interpolation" and req.steps > self.settings.max_interpolation_steps:
            raise InvalidInput(
                f"steps must be <= {self.settings.max_interpolation_steps}", field="steps"
            )

    def _resolve(self, job_id: str, ref: str, owner_id: str | None) -> _Ref:
        # One session in one thread hop: the sampling hot path stays short.
        with session_scope(self.settings.resolved_database_url) as session:
            row = checkpoints.get_checkpoint(session, job_id=job_id, ref=ref, owner_id=owner_id)
            config = row.job.config or {}
            session.expunge(row)  # used after the session closes
        return _Ref(
            row,
            bool(config.get("conditional")),
            config.get("num_classes"),
            int(config.get("image_size") or 0),
            str(config.get("kind") or "noise"),
        )

    async def checkpoint(self, job_id: str, ref: str, owner_id: str | None) -> _Ref:
        key = (job_id, ref, owner_id)
        hit = self.refs.get(key) if ref not in MOVING_REFS else None
        if hit is None:
            hit = await asyncio.to_thread(self._resolve, job_id, ref, owner_id)
            if ref not in MOVING_REFS:
                self.refs.put(key, hit)
        return hit

    async def png(
        self,
        *,
        job_id: str,
        ref: str,
        req: SampleRequest,
        principal: Principal,
        if_none_match: str | None = None,
    ) -> Png:
        """The PNG for a request: from the caches, joined to an identical render in flight, or
        rendered in fair turns off the event loop (charged to the key by its pixels)."""
        self.check(req)
        found = await self.checkpoint(job_id, ref, principal.scope)
        refuse_translator(job_id, ref, found.kind, "samples or interpolations from noise")
        if req.label is not None:
            if not found.conditional:
                raise InvalidInput(
                    "label: this model is unconditional (it takes no label)", field="label"
                )
            if found.num_classes is not None and req.label >= found.num_classes:
                raise InvalidInput(
                    f"label must be < {found.num_classes} (the model's classes)", field="label"
                )
        row = found.row
        # auto: the generator that scored the lower FD (the averaged one until scored)
        fixed = ref not in MOVING_REFS and not (
            req.ema == EmaChoice.auto and row.score_status == "pending"
        )
        req = replace(req, ema=use_ema(row, req.ema))
        etag = self.sampler.etag(checkpoints.content_hash(row), req)
        unchanged = Png(etag, None, row.id, row.step, immutable=fixed)
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return unchanged
        cached = self.sampler.pngs.get(etag)  # a repeat: no thread hop, no disk access
        CACHE.labels("hit" if cached is not None else "miss").inc()
        if cached is None:
            images = req.n if req.kind == "samples" else req.steps
            await self.limits.render(
                principal.key_id or principal.owner_id, images * found.image_size**2
            )
            path = checkpoints.checkpoint_path(self.store, row)
            cached = await self.flights.run(
                etag, lambda: self._render(path, req, etag, owner=principal.owner_id, row=row)
            )
        return replace(unchanged, body=cached)

    async def _render(
        self, path: Path, req: SampleRequest, etag: str, *, owner: str, row: Checkpoint
    ) -> bytes:
        with RENDER_SECONDS.labels(req.kind).time():
            return await self._render_chunks(path, req, etag, owner=owner, row=row)

    async def _render_chunks(
        self, path: Path, req: SampleRequest, etag: str, *, owner: str, row: Checkpoint
    ) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            G = await asyncio.to_thread(self.sampler.generator, path, bool(req.ema))
            z, labels = self.sampler.inputs(G, req)
        except CheckpointError as exc:
            raise InvalidInput(f"checkpoint {row.id} cannot be loaded: {exc}") from exc
        except ValueError as exc:  # e.g. a label outside an unresolved model's classes
            raise InvalidInput(str(exc), field="label") from exc
        parts, chunk = [], self.settings.render_chunk
        for i in range(0, z.shape[0], chunk):
            part_labels = None if labels is None else labels[i : i + chunk]
            async with self.slots.slot(owner):
                parts.append(
                    await loop.run_in_executor(
                        self.sampler.pool, self.sampler.generate, G, z[i : i + chunk], part_labels
                    )
                )
        async with self.slots.slot(owner):
            data = await loop.run_in_executor(
                self.sampler.pool, png_grid, torch.cat(parts), req.nrow
            )
        self.sampler.pngs.put(etag, data)
        return data
