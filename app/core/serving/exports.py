"""Portable generator files of a checkpoint, served: ONNX and TorchScript, made once and kept.

An export is written (gan_core.export) into ``jobs/<job>/exports/`` in the store -- beside the
checkpoints, never inside a checkpoint directory (those hold exactly their three files) --
and kept: the weights of a checkpoint id never change, so neither does its export. Deleting
the job deletes them. Concurrent requests for the same file wait for one export, which runs
in the render slots' fair turns off the event loop.

A translation job's checkpoint exports its translator for one direction (a2b by default; b2a
too for an unpaired model): images (batch, C_in, S, S) in [-1, 1] -> translated, dynamic batch.
One file per (checkpoint, format, weights, direction); a noise generator's files are named as
before, without a direction, and a direction asked of one is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from app.core.access.auth import Principal
from app.core.artifacts import checkpoints
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidInput
from app.core.serving.sampling import MOVING_REFS, EmaChoice, SamplingService, use_ema
from app.core.serving.translating import TRANSLATION_KINDS, directions_of
from gan_core.checkpoint import CheckpointError, load_generator
from gan_core.export import export_onnx, export_torchscript
from gan_core.translation.inference import load_translator

FORMATS = {
    "onnx": ("generator.onnx", "application/octet-stream"),
    "torchscript": ("generator.pt", "application/octet-stream"),
}


@dataclass(frozen=True)
class Export:
    path: Path
    etag: str
    filename: str
    media_type: str
    immutable: bool  # a fixed checkpoint, a fixed generator choice


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Exports:
    def __init__(self, sampling: SamplingService):
        self.sampling = sampling
        self._sha: dict[Path, str] = {}

    async def get(
        self,
        *,
        job_id: str,
        ref: str,
        kind: str,
        ema: EmaChoice,
        principal: Principal,
        direction: str | None = None,  # a translator's; None: a2b
    ) -> Export:
        settings, store = self.sampling.settings, self.sampling.store

        def read() -> tuple[str, Path, bool, int, bool, str | None]:
            with session_scope(settings.resolved_database_url) as s:
                row = checkpoints.get_checkpoint(
                    s, job_id=job_id, ref=ref, owner_id=principal.scope
                )
                model = str((row.job.config or {}).get("kind") or "noise")
                way = _direction(model, direction)  # refused before any file is looked at
                fixed = ref not in MOVING_REFS and not (
                    ema == EmaChoice.auto and row.score_status == "pending"
                )
                return (
                    row.id,
                    checkpoints.checkpoint_path(store, row),
                    use_ema(row, ema),
                    row.step,
                    fixed,
                    way,
                )

        ckpt_id, ckpt_dir, averaged, step, fixed, way = await asyncio.to_thread(read)
        name, media = FORMATS[kind]
        # a noise generator's name has no direction (its files from before keep their names)
        stem = (
            f"{'ema' if averaged else 'raw'}-{name}"
            if way is None
            else (f"{'ema' if averaged else 'raw'}-{way}-{name}")
        )
        target = store.cache_path(f"jobs/{job_id}/exports/{ckpt_id}-{stem}")
        if not target.is_file():
            await self.sampling.flights.run(
                str(target),
                lambda: self._make(
                    kind, ckpt_dir, averaged, target, principal.owner_id, ckpt_id, way
                ),
            )
        sha = self._sha.get(target)
        if sha is None:  # made by another process, or before this one started
            sha = self._sha[target] = await asyncio.to_thread(_sha256, target)
        filename = f"{job_id}-step{step}-{stem}"
        return Export(target, f'"{sha[:32]}"', filename, media, fixed)

    async def _make(
        self,
        kind: str,
        ckpt_dir: Path,
        averaged: bool,
        target: Path,
        owner: str,
        ckpt_id: str,
        direction: str | None,
    ) -> bytes:
        def export() -> bytes:
            try:
                G = (
                    load_generator(ckpt_dir, ema=averaged)
                    if direction is None
                    else load_translator(ckpt_dir, direction, ema=averaged)
                )
            except CheckpointError as exc:
                raise Conflict(f"checkpoint {ckpt_id} cannot be loaded: {exc}") from exc
            target.parent.mkdir(parents=True, exist_ok=True)
            meta = {"checkpoint_id": ckpt_id, "generator": "ema" if averaged else "raw"}
            made = (export_onnx if kind == "onnx" else export_torchscript)(G, target, metadata=meta)
            self._sha[target] = made.sha256
            return b""

        loop = asyncio.get_running_loop()
        async with self.sampling.slots.slot(owner):
            return await loop.run_in_executor(self.sampling.sampler.pool, export)


def _direction(model: str, asked: str | None) -> str | None:
    """The direction to export of a model of this kind: None for a noise generator (which
    has none to ask for), else the one asked (a2b by default), if the kind translates it."""
    if model not in TRANSLATION_KINDS:
        if asked is not None:
            raise InvalidInput(
                f"direction: this checkpoint holds a noise-to-image generator, which has no "
                f"direction (got {asked!r}); leave direction out",
                field="direction",
            )
        return None
    way = asked or "a2b"
    if way not in directions_of(model):
        raise InvalidInput(
            f"direction: a {model} model translates {' or '.join(directions_of(model))}, "
            f"not {way!r}",
            field="direction",
        )
    return way
