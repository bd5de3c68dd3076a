"""Concurrent translate requests for one model run as a batch, and a translation's bytes do not
depend on it: over HTTP (a paired U-Net and an unpaired ResNet job trained in this process,
requests held back until they all wait, then let go at once), and on the batcher itself with
both nets at 32 and 64 px, batch sizes 1..16, at 1 and 2 torch threads."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.api.main import create_app
from app.core.integrations.telemetry import TRANSLATE_BATCH
from app.core.serving.render_queue import FairSlots
from app.core.serving.translate_batcher import TranslateBatcher, batch_invariant
from app.core.serving.translating import image_png
from gan_core.translation.inference import translate
from gan_core.translation.nets import build_translator, init_translation_weights
from tests.api.conftest import make_key
from tests.api.test_translate import PAIRED, UNPAIRED, _settings, _trained, domains_zip, noise_image
from tests.api.upload_helpers import assert_problem, upload

N = 8  # concurrent requests


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Settings, an API key and two trained jobs: paired (U-Net) and unpaired (ResNet)."""
    settings = _settings(tmp_path_factory.mktemp("batching"), sample_rate=0)
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        paired = _trained(c, settings, PAIRED)
        ds = upload(c, domains_zip(), filename="h2z.zip").json()
        unpaired = _trained(c, settings, {**UNPAIRED, "dataset": ds["id"]})
    return settings, key, {"paired": paired, "unpaired": unpaired}


def _url(job_id: str, direction: str = "a2b") -> str:
    return f"/v1/jobs/{job_id}/checkpoints/latest/translate?direction={direction}"


def _post(client: TestClient, url: str, data: bytes):
    return client.post(url, content=data, headers={"Content-Type": "image/png"})


def _batch_count(forward: str) -> float:
    """How many batches the process ran, one pass or per image (the Prometheus histogram)."""
    for metric in TRANSLATE_BATCH.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels["forward"] == forward:
                return sample.value
    return 0.0


def _all_at_once(client: TestClient, url: str, bodies: list[bytes]) -> list:
    """POST every body at once while the render slots are held, so that every request is
    waiting before any may run; then let them go, on one slot (as on a 2-core machine,
    whatever this one has). Responses in the order of ``bodies``."""
    slots = client.app.state.services.sampling.slots
    gate, rest = threading.Event(), threading.Event()

    def holder(event: threading.Event):
        async def hold() -> None:
            async with slots.slot("someone else"):
                while not event.is_set():
                    await asyncio.sleep(0.002)

        return hold

    assert client.portal is not None
    others = slots.free - 1
    held = [client.portal.start_task_soon(holder(gate))]
    held += [client.portal.start_task_soon(holder(rest)) for _ in range(others)]
    deadline = time.monotonic() + 5
    while slots.free and time.monotonic() < deadline:
        time.sleep(0.002)
    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            futures = [pool.submit(_post, client, url, body) for body in bodies]
            deadline = time.monotonic() + 30
            while slots.waiting < len(bodies) and time.monotonic() < deadline:
                time.sleep(0.005)  # each request waits for its turn to decode its image
            assert slots.waiting >= len(bodies), "the requests never all waited at once"
            gate.set()
            return [f.result(timeout=60) for f in futures]
    finally:
        gate.set()
        rest.set()
        for h in held:
            h.result(timeout=10)


@pytest.mark.parametrize(("kind", "direction"), [("paired", "a2b"), ("unpaired", "b2a")])
def test_concurrent_requests_are_one_batch_with_the_bytes_each_gets_alone(jobs, kind, direction):
    """N requests at once are one batch. The first batch of a size is checked (each image its
    own pass, the batched pass compared); the next runs as one pass if that proved equal.
    Either way each response is the bytes and ETag the image gets alone."""
    settings, key, job_ids = jobs
    mode = "L" if direction == "a2b" else "RGB"  # unpaired: trainA grey, trainB colour
    first = [noise_image((36, 33), mode, seed=100 + i) for i in range(N)]
    second = [noise_image((36, 33), mode, seed=300 + i) for i in range(N)]
    url = _url(job_ids[kind], direction)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), headers=headers) as alone:  # one at a time
        lone = [_post(alone, url, body) for body in first + second]
        assert alone.app.state.services.translations.batcher.batches == 2 * N
    assert [r.status_code for r in lone] == [200] * (2 * N), [r.text for r in lone]
    assert len({r.content for r in lone}) == 2 * N
    # a fresh process's caches: no PNG cache answers, every image is translated again
    with TestClient(create_app(settings), headers=headers) as client:
        services = client.app.state.services
        batcher = services.translations.batcher
        counted = _batch_count("batched") + _batch_count("per-image")
        together = _all_at_once(client, url, first)
        assert (batcher.batches, batcher.batched) == (1, 0)  # N requests, one batch, checked
        together += _all_at_once(client, url, second)
        assert batcher.batches == 2
        assert _batch_count("batched") + _batch_count("per-image") == counted + 2
        (model,) = services.translations.translators._items.values()
        assert batcher.batched == int(batch_invariant(model, _inputs(model, N)))
    assert [r.status_code for r in together] == [200] * (2 * N), [r.text for r in together]
    assert [r.content for r in together] == [r.content for r in lone]
    assert [r.headers["etag"] for r in together] == [r.headers["etag"] for r in lone]


def _inputs(model: nn.Module, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = vars(model)["config"].image_size
    return torch.randint(
        0, 256, (n, vars(model)["in_channels"], size, size), generator=g, dtype=torch.uint8
    )


def test_a_bad_image_among_good_ones_fails_alone(jobs):
    settings, key, job_ids = jobs
    url = _url(job_ids["paired"])
    good = [noise_image((36, 33), "L", seed=200 + i) for i in range(N - 1)]
    bad = noise_image((36, 33), "RGB", seed=7)  # colour, for a model of grey edge maps
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), headers=headers) as alone:
        lone = [_post(alone, url, body).content for body in good]
    with TestClient(create_app(settings), headers=headers) as client:
        responses = _all_at_once(client, url, [*good[:3], bad, *good[3:]])
        assert client.app.state.services.translations.batcher.batches == 1
    assert_problem(responses[3], 422, field="image")
    rest = responses[:3] + responses[4:]
    assert [r.status_code for r in rest] == [200] * (N - 1)
    assert [r.content for r in rest] == lone


# --------------------------------------------------------------------------- the batcher


def _batcher(max_images: int = 16) -> TranslateBatcher:
    return TranslateBatcher(FairSlots(1), ThreadPoolExecutor(1), image_png, max_images=max_images)


ALL_SIZES = tuple(range(1, 17))


@pytest.mark.parametrize(
    ("net", "c_in", "size", "threads", "sizes"),
    [
        ("unet", 1, 32, 1, ALL_SIZES),
        ("unet", 1, 64, 1, ALL_SIZES),
        ("resnet", 3, 32, 1, ALL_SIZES),
        ("resnet", 3, 64, 1, ALL_SIZES),
        # 2 threads: a few sizes only (two OpenMP threads crawl on a busy 2-core machine)
        ("unet", 1, 32, 2, (2, 5)),
        ("resnet", 3, 32, 2, (2, 5)),
    ],
)
def test_any_batch_gives_the_bytes_of_one_image_alone(net, c_in, size, threads, sizes):
    """Each batch size run twice (the first time it is checked, the second time it runs as
    found): every image's PNG is the one it gets alone. Measured before batching shipped:
    at 1 thread the ResNet's batched floats differ from its lone ones at every size (PyTorch
    picks another conv backend for one image), at 2 threads the U-Net's too at odd sizes."""
    torch.manual_seed(size)
    model = init_translation_weights(build_translator(net, c_in, 3, size, 8)).eval()
    model.requires_grad_(False)
    x = torch.randint(0, 256, (max(sizes), c_in, size, size), dtype=torch.uint8)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        lone = [image_png(translate(model, x[i : i + 1])[0]) for i in range(max(sizes))]
        batcher = _batcher()
        for b in sizes:
            for _ in range(2):
                pngs, passes = batcher._pngs(model, list(x[:b]))
                assert pngs == lone[:b], (net, size, threads, b)
                assert 1 <= passes <= b
        # and a size runs as one pass exactly where its first images proved equal
        for (n, _, _), proven in batcher._proven[model].items():
            assert proven == batch_invariant(model, x[:n]), (net, size, threads, n)
    finally:
        torch.set_num_threads(previous)


class _Coupled(nn.Module):
    """A net whose images are not independent: each output is shifted by the batch's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.tanh(y - y.mean())


def test_a_batch_size_that_changes_the_floats_keeps_one_pass_per_image():
    model = _Coupled().eval().requires_grad_(False)
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    assert not batch_invariant(model, x)
    lone = [image_png(translate(model, x[i : i + 1])[0]) for i in range(4)]
    batcher = _batcher()
    for _ in range(3):
        pngs, passes = batcher._pngs(model, list(x))
        assert pngs == lone and passes == 4
    assert image_png(translate(model, x)[0]) != lone[0]  # one pass would have changed them


def test_a_batch_is_capped_and_a_gone_client_leaves_the_others_their_images():
    model = _Coupled().eval().requires_grad_(False)
    x = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    lone = [image_png(translate(model, x[i : i + 1])[0]) for i in range(6)]

    async def scenario() -> tuple[list[bytes | None], int]:
        batcher = _batcher(max_images=4)
        async with batcher.slots.slot("holder"):  # all wait until everyone has asked
            tasks = [
                asyncio.ensure_future(batcher.translate("m", model, "alice", image)) for image in x
            ]
            await asyncio.sleep(0.01)
            tasks[1].cancel()  # its client went away while it waited
        await asyncio.wait(tasks)
        out = [None if t.cancelled() else t.result() for t in tasks]
        return out, batcher.batches

    out, batches = asyncio.run(scenario())
    assert batches == 2  # 6 images, at most 4 a batch
    assert out[1] is None
    assert out[:1] + out[2:] == lone[:1] + lone[2:]
