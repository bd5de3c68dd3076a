"""Serving samples: resolve the checkpoint, check the request against the model, render a PNG.

``Sampler`` keeps a bounded LRU of loaded generators and of rendered PNGs; concurrent
requests for one checkpoint load it once (a lock per key), different checkpoints load in
parallel. ``SamplingService`` is what the API calls: it resolves a checkpoint reference in
one short database session, answers repeats from the caches without a thread hop, and runs
torch off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from app.core import checkpoints
from app.core.cache import LRU, TTLCache
from app.core.db import session_scope
from app.core.errors import InvalidInput
from app.core.models import Checkpoint
from app.core.settings import Settings
from app.core.store import ArtifactStore
from gan_core.checkpoint import CheckpointError, load_generator
from gan_core.sampling import interpolate, png_grid, sample


@dataclass(frozen=True)
class SampleRequest:
    kind: str  # "samples" | "interpolation"
    n: int = 64
    seed: int = 0
    nrow: int = 8
    label: int | None = None
    ema: bool = True
    truncation: float | None = None
    from_seed: int = 0
    to_seed: int = 1
    steps: int = 8


class Sampler:
    """Renders PNGs from checkpoints, caching generators and finished images."""

    def __init__(self, generator_cache_size: int = 8, png_cache_size: int = 256,
                 render_slots: int | None = None):
        self.generators: LRU[torch.nn.Module] = LRU(generator_cache_size)
        self.pngs: LRU[bytes] = LRU(png_cache_size)
        # Renders running at once. Each already uses torch's intra-op threads; more renders
        # than cores / threads only fight over the cores (16 concurrent renders measured
        # 0.8x the throughput of one at a time on 2 cores), so the rest wait their turn.
        if render_slots is None:
            render_slots = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
        self._slots = threading.BoundedSemaphore(render_slots)

    @staticmethod
    def etag(checkpoint_sha: str, req: SampleRequest) -> str:
        """A strong validator: same checkpoint bytes and parameters -> same PNG bytes."""
        raw = f"{checkpoint_sha}|{req}"
        return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'

    def generator(self, ckpt_dir: Path, ema: bool) -> torch.nn.Module:
        return self.generators.get_or_load(
            (str(ckpt_dir), ema), lambda: load_generator(ckpt_dir, ema=ema)
        )

    def render(self, ckpt_dir: Path, req: SampleRequest, etag: str) -> bytes:
        cached = self.pngs.get(etag)
        if cached is not None:
            return cached
        G = self.generator(ckpt_dir, req.ema)
        with self._slots:
            if req.kind == "interpolation":
                images = interpolate(G, req.from_seed, req.to_seed, req.steps, label=req.label)
            else:
                images = sample(G, req.n, req.seed, labels=req.label, truncation=req.truncation)
            data = png_grid(images, nrow=req.nrow)
        self.pngs.put(etag, data)
        return data


@dataclass(frozen=True)
class Png:
    """A rendered (or unchanged) image and what the response says about it."""

    etag: str
    body: bytes | None  # None: the client's If-None-Match already names it (304)
    checkpoint_id: str
    step: int
    immutable: bool  # a fixed checkpoint id names immutable weights; 'latest' moves


@dataclass(frozen=True)
class _Ref:
    row: Checkpoint
    conditional: bool
    num_classes: int | None


class SamplingService:
    """The sampling endpoints' logic, minus HTTP."""

    def __init__(self, settings: Settings, store: ArtifactStore, sampler: Sampler):
        self.settings, self.store, self.sampler = settings, store, sampler
        # (job, checkpoint id, owner scope) -> _Ref for 1 s: a repeated sample request for a
        # fixed checkpoint is answered without a database round trip.
        self.refs: TTLCache[_Ref] = TTLCache(ttl=1.0)

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
        return _Ref(row, bool(config.get("conditional")), config.get("num_classes"))

    async def checkpoint(self, job_id: str, ref: str, owner_id: str | None) -> _Ref:
        key = (job_id, ref, owner_id)
        hit = self.refs.get(key) if ref != "latest" else None
        if hit is None:
            hit = await asyncio.to_thread(self._resolve, job_id, ref, owner_id)
            if ref != "latest":
                self.refs.put(key, hit)
        return hit

    async def png(self, *, job_id: str, ref: str, req: SampleRequest, owner_id: str | None,
                  if_none_match: str | None = None) -> Png:
        """The PNG for a request, from the caches or rendered off the event loop."""
        self.check(req)
        found = await self.checkpoint(job_id, ref, owner_id)
        if req.label is not None:
            if not found.conditional:
                raise InvalidInput("label: this model is unconditional (it takes no label)",
                                   field="label")
            if found.num_classes is not None and req.label >= found.num_classes:
                raise InvalidInput(f"label must be < {found.num_classes} (the model's classes)",
                                   field="label")
        row = found.row
        etag = self.sampler.etag(checkpoints.content_hash(row), req)
        made = dict(etag=etag, checkpoint_id=row.id, step=row.step, immutable=ref != "latest")
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return Png(body=None, **made)
        cached = self.sampler.pngs.get(etag)  # a repeat: no thread hop, no disk access
        if cached is not None:
            return Png(body=cached, **made)
        path = checkpoints.checkpoint_path(self.store, row)
        try:
            data = await asyncio.to_thread(self.sampler.render, path, req, etag)
        except CheckpointError as exc:
            raise InvalidInput(f"checkpoint {row.id} cannot be loaded: {exc}") from exc
        except ValueError as exc:  # e.g. a label outside an unresolved model's classes
            raise InvalidInput(str(exc), field="label") from exc
        return Png(body=data, **made)
