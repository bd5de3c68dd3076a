"""The pictures of a job, served: the losses chart and the checkpoint timeline (PNG, GIF).

Data comes from the job's records (app.core.serving.history) and checkpoints; drawing is
app.core.serving.pictures. Like samples, every picture has a strong ETag derived from what it
shows, is cached with the rendered PNGs, and is drawn off the event loop in the render slots'
fair turns, charged to the key by the pixels it generates.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.core.access.auth import Principal
from app.core.artifacts import checkpoints
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput
from app.core.serving import history
from app.core.serving.pictures import (
    MAX_TIMELINE_ROWS,
    ScorePoint,
    TimelineRow,
    TrainPoint,
    losses_png,
    timeline_gif,
    timeline_png,
)
from app.core.serving.sampling import EmaChoice, SamplingService, use_ema
from gan_core.checkpoint import CheckpointError
from gan_core.sampling import sample_inputs


@dataclass(frozen=True)
class Picture:
    etag: str
    body: bytes | None  # None: If-None-Match named it (304)
    media_type: str


def _etag(*parts: object) -> str:
    raw = json.dumps(parts, sort_keys=True, default=str)
    return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


def _matches(etag: str, if_none_match: str | None) -> bool:
    return bool(if_none_match) and etag in [t.strip() for t in (if_none_match or "").split(",")]


def spread(items: list, limit: int) -> list:
    """At most ``limit`` items evenly spread over the list, always keeping the first and last."""
    if len(items) <= limit:
        return items
    if limit == 1:
        return items[-1:]
    picks = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in picks]


class JobPictures:
    """The job pictures' logic, minus HTTP."""

    def __init__(self, sampling: SamplingService):
        self.sampling = sampling
        self.url = sampling.settings.resolved_database_url

    async def _render(self, etag: str, owner: str, draw: Callable[[], bytes]) -> bytes:
        pngs = self.sampling.sampler.pngs
        cached = pngs.get(etag)
        if cached is not None:
            return cached

        async def work() -> bytes:
            loop = asyncio.get_running_loop()
            async with self.sampling.slots.slot(owner):
                data = await loop.run_in_executor(self.sampling.sampler.pool, draw)
            pngs.put(etag, data)
            return data

        return await self.sampling.flights.run(etag, work)

    async def losses(
        self,
        *,
        job_id: str,
        principal: Principal,
        width: int,
        height: int,
        if_none_match: str | None,
    ) -> Picture:
        """D and G losses over steps, the FD per checkpoint on a second axis, the best marked,
        the augmentation probability (if any) in a strip below."""

        def read() -> tuple[str, list[TrainPoint], list[ScorePoint]]:
            with session_scope(self.url) as s:
                h = history.job_history(s, job_id=job_id, owner_id=principal.scope)
                train = [
                    TrainPoint(m.step_to, m.d_loss, m.g_loss, m.augment_p)
                    for m in h.train
                    if m.d_loss is not None and m.g_loss is not None
                ]
                scores = [
                    ScorePoint(c.step, c.best_fd, c.id == h.job.best_checkpoint_id)
                    for c in h.checkpoints
                ]
                return h.job.name, train, scores

        name, train, scores = await asyncio.to_thread(read)
        etag = _etag("losses", width, height, name, train, scores)
        if _matches(etag, if_none_match):
            return Picture(etag, None, "image/png")
        body = await self._render(
            etag,
            principal.owner_id,
            lambda: losses_png(train, scores, width=width, height=height, title=name),
        )
        return Picture(etag, body, "image/png")

    async def timeline(
        self,
        *,
        job_id: str,
        principal: Principal,
        n: int,
        seed: int,
        rows: int,
        ema: EmaChoice,
        animated: bool,
        frame_ms: int,
        if_none_match: str | None,
    ) -> Picture:
        """The same seeds rendered by each stored checkpoint: a grid with a row per checkpoint
        (oldest on top), or an animation with a frame per checkpoint."""
        if rows > MAX_TIMELINE_ROWS:
            raise InvalidInput(f"rows must be <= {MAX_TIMELINE_ROWS}", field="rows")

        def read() -> tuple[list[tuple[int, Path, bool, str]], int]:
            with session_scope(self.url) as s:
                stored = checkpoints.list_checkpoints(s, job_id=job_id, owner_id=principal.scope)
                picked = spread(list(reversed(stored)), rows)  # oldest first
                size = int((stored[0].job.config or {}).get("image_size") or 0) if stored else 0
                return [
                    (
                        c.step,
                        checkpoints.checkpoint_path(self.sampling.store, c),
                        use_ema(c, ema),
                        checkpoints.content_hash(c),
                    )
                    for c in picked
                ], size

        picked, size = await asyncio.to_thread(read)
        if not picked:
            raise Conflict(f"job {job_id} has no checkpoint yet to show")
        kind = "gif" if animated else "png"
        etag = _etag(
            "timeline",
            self.sampling.sampler.mode,
            kind,
            n,
            seed,
            frame_ms if animated else None,
            [(step, use, sha) for step, _, use, sha in picked],
        )
        media = "image/gif" if animated else "image/png"
        if _matches(etag, if_none_match):
            return Picture(etag, None, media)
        if self.sampling.sampler.pngs.get(etag) is None:
            await self.sampling.limits.render(
                principal.key_id or principal.owner_id, len(picked) * n * size**2
            )
        cached = self.sampling.sampler.pngs.get(etag)
        if cached is None:
            cached = await self.sampling.flights.run(
                etag,
                lambda: self._draw_timeline(
                    etag, principal.owner_id, picked, n, seed, animated, frame_ms
                ),
            )
        return Picture(etag, cached, media)

    async def _draw_timeline(
        self,
        etag: str,
        owner: str,
        picked: list[tuple[int, Path, bool, str]],
        n: int,
        seed: int,
        animated: bool,
        frame_ms: int,
    ) -> bytes:
        sampler, loop = self.sampling.sampler, asyncio.get_running_loop()

        def row(step: int, path: Path, use: bool) -> TimelineRow:
            try:
                G = sampler.generator(path, use)
            except CheckpointError as exc:
                raise InvalidInput(f"checkpoint at step {step} cannot be loaded: {exc}") from exc
            z, labels = sample_inputs(G, n, seed)  # the same latents in every row
            return TimelineRow(step, sampler.generate(G, z, labels))

        rows = []
        for step, path, use, _ in picked:  # a turn per row: other owners go in between
            async with self.sampling.slots.slot(owner):
                rows.append(await loop.run_in_executor(sampler.pool, row, step, path, use))

        def encode() -> bytes:
            return timeline_gif(rows, frame_ms=frame_ms) if animated else timeline_png(rows)

        async with self.sampling.slots.slot(owner):
            data = await loop.run_in_executor(sampler.pool, encode)
        sampler.pngs.put(etag, data)
        return data
