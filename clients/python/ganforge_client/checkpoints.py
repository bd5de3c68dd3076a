"""The Client's checkpoint methods: list, get, download, and the pictures and metrics drawn
from a job's checkpoints (samples, interpolation, losses, timeline)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from ganforge_client.models import Checkpoint, Metrics, Png
from ganforge_client.transport import CHUNK_BYTES, Transport, params, png_of, seg

if TYPE_CHECKING:
    from PIL.Image import Image

Ema = bool | Literal["auto", "true", "false"]


class CheckpointsApi(Transport):
    def _ckpt(self, job_id: str, ref: str) -> str:
        return f"/v1/jobs/{seg(job_id)}/checkpoints/{seg(ref)}"

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """The job's stored checkpoints, newest first, with their scores."""
        items = self._json("GET", f"/v1/jobs/{seg(job_id)}/checkpoints")["items"]
        return [Checkpoint.model_validate(c) for c in items]

    def get_checkpoint(self, job_id: str, ref: str = "latest") -> Checkpoint:
        """One checkpoint: ``ref`` is its id, "latest" or "best"."""
        return Checkpoint.model_validate(self._json("GET", self._ckpt(job_id, ref)))

    def download_checkpoint(self, job_id: str, ref: str, path: str | os.PathLike[str]) -> Path:
        """Save the checkpoint's zip (safetensors + meta.json) to ``path`` (a file, or a folder
        to put the server's file name in), streamed; returns the file written."""
        target = Path(path)
        with self._stream(f"{self._ckpt(job_id, ref)}/download") as response:
            if target.is_dir():
                match = re.search(
                    r'filename="([^"/\\]+)"', response.headers.get("content-disposition", "")
                )
                target = target / (match.group(1) if match else f"{job_id}-{ref}.zip")
            part = target.with_name(f".{target.name}.part")
            try:
                with part.open("wb") as f:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        f.write(chunk)
                part.replace(target)  # a whole file or none
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        return target

    def _picture(self, path: str, query: dict[str, Any], image: bool) -> Png | Image:
        png = png_of(self.request("GET", path, params=query))
        return png.image() if image else png

    @overload
    def samples(
        self,
        job_id: str,
        ref: str = ...,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        truncation: float | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def samples(
        self,
        job_id: str,
        ref: str = ...,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        truncation: float | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def samples(
        self,
        job_id: str,
        ref: str = "latest",
        *,
        n: int | None = 64,
        seed: int | None = 0,
        nrow: int | None = 8,
        label: int | None = None,
        ema: Ema | None = "auto",
        truncation: float | None = None,
        image: bool = False,
    ) -> Png | Image:
        """A PNG grid of ``n`` samples (the same arguments always give the same bytes); with
        ``image=True`` a PIL image. ``ema``: "auto" (the better-scored generator), True, False."""
        query = params(n=n, seed=seed, nrow=nrow, label=label, ema=ema, truncation=truncation)
        return self._picture(f"{self._ckpt(job_id, ref)}/samples.png", query, image)

    @overload
    def interpolation(
        self,
        job_id: str,
        ref: str = ...,
        *,
        from_seed: int,
        to_seed: int,
        steps: int,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def interpolation(
        self,
        job_id: str,
        ref: str = ...,
        *,
        from_seed: int,
        to_seed: int,
        steps: int,
        nrow: int | None = ...,
        label: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def interpolation(
        self,
        job_id: str,
        ref: str = "latest",
        *,
        from_seed: int,
        to_seed: int,
        steps: int,
        nrow: int | None = None,
        label: int | None = None,
        ema: Ema | None = None,
        image: bool = False,
    ) -> Png | Image:
        """A latent walk of ``steps`` images from one seed's image to another's."""
        query = params(
            from_seed=from_seed, to_seed=to_seed, steps=steps, nrow=nrow, label=label, ema=ema
        )
        return self._picture(f"{self._ckpt(job_id, ref)}/interpolation.png", query, image)

    def metrics(self, job_id: str) -> Metrics:
        """The run's loss history (bounded, oldest first) and every checkpoint's scores."""
        return Metrics.model_validate(self._json("GET", f"/v1/jobs/{seg(job_id)}/metrics"))

    def metrics_csv(self, job_id: str) -> str:
        """The same as CSV: a row per loss bucket and per checkpoint."""
        path = f"/v1/jobs/{seg(job_id)}/metrics"
        return self.request("GET", path, headers={"Accept": "text/csv"}).text

    @overload
    def losses_png(
        self,
        job_id: str,
        *,
        width: int | None = ...,
        height: int | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def losses_png(
        self,
        job_id: str,
        *,
        width: int | None = ...,
        height: int | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def losses_png(
        self,
        job_id: str,
        *,
        width: int | None = None,
        height: int | None = None,
        image: bool = False,
    ) -> Png | Image:
        """D and G losses over the steps, with each checkpoint's FD."""
        query = params(width=width, height=height)
        return self._picture(f"/v1/jobs/{seg(job_id)}/losses.png", query, image)

    @overload
    def timeline_png(
        self,
        job_id: str,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        rows: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[False] = ...,
    ) -> Png: ...
    @overload
    def timeline_png(
        self,
        job_id: str,
        *,
        n: int | None = ...,
        seed: int | None = ...,
        rows: int | None = ...,
        ema: Ema | None = ...,
        image: Literal[True],
    ) -> Image: ...
    def timeline_png(
        self,
        job_id: str,
        *,
        n: int | None = None,
        seed: int | None = None,
        rows: int | None = None,
        ema: Ema | None = None,
        image: bool = False,
    ) -> Png | Image:
        """The same seeds at every stored checkpoint, a row per checkpoint."""
        query = params(n=n, seed=seed, rows=rows, ema=ema)
        return self._picture(f"/v1/jobs/{seg(job_id)}/timeline.png", query, image)

    def timeline_gif(
        self,
        job_id: str,
        *,
        n: int | None = None,
        seed: int | None = None,
        rows: int | None = None,
        ema: Ema | None = None,
        frame_ms: int | None = None,
    ) -> Png:
        """The timeline as an animated GIF, a frame per checkpoint (``media_type`` image/gif)."""
        query = params(n=n, seed=seed, rows=rows, ema=ema, frame_ms=frame_ms)
        return png_of(self.request("GET", f"/v1/jobs/{seg(job_id)}/timeline.gif", params=query))
