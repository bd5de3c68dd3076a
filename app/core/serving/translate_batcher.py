"""Translate requests waiting for the same loaded translator, run as one batched forward pass.

At 32 px a translation takes ~17 ms and a request adds ~4 ms around it (HTTP, hashing,
decoding, limiter, thread hops); images stacked into one pass cost less each, and a batch
takes one slot turn and one thread hop for all its images.

Who joins whom (everything on the event loop, no timer): the first request for a model opens
a batch, whose task waits for a render slot in the turn of the owner who opened it; requests
for the same model (checkpoint, direction, EMA or raw weights) that arrive meanwhile join it,
up to MAX_BATCH_IMAGES images and MAX_BATCH_PIXELS pixels. Once it has its slot the batch is
closed and runs; the next arrival opens the next batch. A lone request waits for nothing
extra. Checkpoints are their owner's, so a batch holds one owner's requests unless a key that
sees everyone's (an admin's) joins it: then it still takes one slot turn, the opener's, and is
bounded like any render chunk. Each image comes prepared (decoded, checked) by its request,
so a bad image fails its own request before it joins; a client that goes away leaves its
image's result unread and the others' untouched.

The bytes must not depend on the batch. Eval mode and instance norm make the nets per-sample,
but the CPU convolutions are not always: PyTorch runs a 3x3 conv on one small image with
another backend than on several (the ResNet differs at every size), and oneDNN may split a
batch's work between threads by its size (the U-Net's transposed convs at 32 px on 2 threads,
odd sizes, 1 ulp that turns a pixel). So a batch goes in parts of powers of two (11 images:
8 + 2 + 1), and a model runs a part of n images as one pass only once n proved equal: the
first part of n is run both ways, the one-image passes are served, and if the n-image pass
gave every image the same floats (stricter than the same bytes), later parts of n (at this
torch thread count) are one pass; otherwise each image keeps a pass of its own.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch
from torch import nn

from app.core.integrations.telemetry import TRANSLATE_BATCH
from app.core.serving.render_queue import FairSlots
from gan_core.translation.inference import to_pixels, translator_output

MAX_BATCH_IMAGES = 16
# A batch's slot turn is at most about one 256-px image's: 16 images at 64 px, 4 at 128 px.
MAX_BATCH_PIXELS = 16 * 64 * 64


@dataclass
class _Batch:
    owner: str  # whose turn for a slot it takes: the request that opened it
    images: list[torch.Tensor] = field(default_factory=list)  # uint8 (C, S, S), prepared
    results: list[asyncio.Future[bytes]] = field(default_factory=list)
    pixels: int = 0


class TranslateBatcher:
    """Prepared images of concurrent requests, translated a batch per model at a time."""

    def __init__(
        self,
        slots: FairSlots,
        pool: Executor,
        encode: Callable[[torch.Tensor], bytes],
        *,
        max_images: int = MAX_BATCH_IMAGES,
        max_pixels: int = MAX_BATCH_PIXELS,
    ):
        # encode: one uint8 (C, S, S) image's PNG
        self.slots, self.pool, self.encode = slots, pool, encode
        self.max_images, self.max_pixels = max_images, max_pixels
        self._open: dict[Hashable, _Batch] = {}  # model key -> the batch still taking images
        self._tasks: set[asyncio.Task[None]] = set()
        # model -> {(batch size, image shape, torch threads): one pass gives the same floats}
        self._proven: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self.batches = 0  # batches run (tests and benchmarks read these)
        self.batched = 0  # of them, those with a pass of several images
        self.passes = 0  # forward passes run
        self.images = 0  # images translated

    async def translate(
        self, key: Hashable, model: nn.Module, owner: str, image: torch.Tensor
    ) -> bytes:
        """The PNG of one prepared image (uint8 (C, S, S)) through ``model``, keyed ``key``."""
        pixels = image.shape[-1] * image.shape[-2]
        batch = self._open.get(key)
        if batch is None or (
            len(batch.images) >= self.max_images or batch.pixels + pixels > self.max_pixels
        ):
            batch = self._open[key] = _Batch(owner)
            task = asyncio.ensure_future(self._run(key, model, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        result: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        batch.images.append(image)
        batch.results.append(result)
        batch.pixels += pixels
        return await result

    async def _run(self, key: Hashable, model: nn.Module, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self.slots.slot(batch.owner):
                if self._open.get(key) is batch:
                    del self._open[key]  # closed: later arrivals open the next batch
                # requests whose client went away before the turn came are left out
                wanted = [i for i, r in enumerate(batch.results) if not r.done()]
                if not wanted:
                    return
                images = [batch.images[i] for i in wanted]
                pngs, passes = await loop.run_in_executor(self.pool, self._pngs, model, images)
            together = passes < len(images)
            self.batches, self.batched = self.batches + 1, self.batched + together
            self.passes, self.images = self.passes + passes, self.images + len(images)
            TRANSLATE_BATCH.labels("batched" if together else "per-image").observe(len(images))
            for i, png in zip(wanted, pngs, strict=True):
                if not batch.results[i].done():
                    batch.results[i].set_result(png)
        except Exception as exc:  # every request of the batch gets the error
            for r in batch.results:
                if not r.done():
                    r.set_exception(exc)
        finally:
            if self._open.get(key) is batch:
                del self._open[key]
            for r in batch.results:  # cancelled (shutting down): nobody is left waiting
                if not r.done():
                    r.cancel()

    # -- on a render thread

    def _pngs(self, model: nn.Module, images: list[torch.Tensor]) -> tuple[list[bytes], int]:
        """The images' PNGs, and how many forward passes made them. Images go in parts of
        powers of two, largest first (11 images: 8 + 2 + 1): only four sizes to check."""
        outputs: list[torch.Tensor] = []
        passes = 0
        while len(outputs) < len(images):
            size = _largest_power_of_two(len(images) - len(outputs))
            part = torch.stack(images[len(outputs) : len(outputs) + size])
            key = (size, tuple(part.shape[1:]), torch.get_num_threads())
            with self._lock:
                proven = size > 1 and self._proven.setdefault(model, {}).get(key)
            if proven:
                outputs += list(to_pixels(translator_output(model, part)))
                passes += 1
                continue
            lone = [translator_output(model, part[i : i + 1])[0] for i in range(size)]
            outputs += [to_pixels(y) for y in lone]
            passes += size
            if proven is None:  # the first part of this size: check it, serve the lone ones
                together = translator_output(model, part)
                same = all(torch.equal(y, together[i]) for i, y in enumerate(lone))
                with self._lock:
                    self._proven.setdefault(model, {})[key] = same
        return [self.encode(out) for out in outputs], passes


def _largest_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def batch_invariant(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``model`` gives each of uint8 (N, C, S, S) ``images`` the same floats in one
    pass as alone. Exact float equality: 1 ulp apart may round to another byte for another
    input, so only bit-equal passes are trusted."""
    together = translator_output(model, images)
    return all(
        torch.equal(translator_output(model, images[i : i + 1])[0], together[i])
        for i in range(images.shape[0])
    )
