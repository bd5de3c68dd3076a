"""Sampling under load: identical renders coalesce, owners take turns, work is priced."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.serving.cache import LRU
from tests.api.conftest import make_key


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sample_rate": 0})  # only the render budget applies


def _get(client, url: str, key: str):
    return client.get(url, headers={"Authorization": f"Bearer {key}"})


def test_identical_concurrent_cache_misses_render_once(client, trained_job):
    job_id, _ = trained_job
    service = client.app.state.services.sampling
    runs, chunks = service.flights.runs, service.sampler.renders
    url = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png?n=4&seed=99"
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda _: client.get(url), range(32)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert service.flights.runs - runs == 1  # 32 requests, one render
    assert service.sampler.renders - chunks == 1


def test_another_owner_is_not_stuck_behind_one_owners_big_renders(settings, trained_job):
    """Alice fires six n=256 renders at once, then Bob asks for n=4: Bob is served in turn
    between Alice's chunks and finishes before Alice's renders do (first come first served,
    he would wait for all six)."""
    job_id, _ = trained_job
    alice, bob = make_key(settings, "alice"), make_key(settings, "bob-admin", admin=True)
    base = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png"
    finished: list[str] = []
    lock = threading.Lock()

    def fetch(who: str, key: str, query: str) -> int:
        r = _get(client, f"{base}?{query}", key)
        with lock:
            finished.append(who)
        return r.status_code

    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(8) as pool:
        slots = client.app.state.services.sampling.slots
        big = [pool.submit(fetch, "alice", alice, f"n=256&seed={s}") for s in range(6)]
        deadline = time.monotonic() + 10
        while slots.waiting < 3 and time.monotonic() < deadline:  # alice's renders are queued
            time.sleep(0.005)
        small = pool.submit(fetch, "bob", bob, "n=4&seed=1")
        assert small.result() == 200 and [f.result() for f in big] == [200] * 6
    assert finished.index("bob") < len(finished) - 1, finished
    # Once Bob waited for a slot, the next one freed was his (one slot here): Alice's queued
    # chunks did not go first.
    log = list(slots.log)
    waited = log.index(("wait", "bob-admin"))
    grants = [owner for event, owner in log[waited:] if event == "grant"]
    assert grants[0] == "bob-admin", log[waited : waited + 6]


def test_renders_are_priced_by_pixels_not_requests(settings, trained_job):
    job_id, _ = trained_job
    # 16 px images: n=256 is 65.5 kpx; the burst is 20 kpx (capped: one big render still fits)
    limited = settings.model_copy(
        update={"render_megapixels_per_second": 0.001, "render_burst_megapixels": 0.02}
    )
    alice, bob = make_key(settings, "alice"), make_key(settings, "root", admin=True)  # sees all
    base = f"/v1/jobs/{job_id}/checkpoints/latest/samples.png"
    with TestClient(create_app(limited)) as client:
        assert _get(client, f"{base}?n=256&seed=1", alice).status_code == 200
        r = _get(client, f"{base}?n=256&seed=2", alice)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "megapixels" in r.json()["detail"]
        assert _get(client, f"{base}?n=256&seed=1", alice).status_code == 200  # cached: free
        # the same budget buys Bob many small renders (0.26 kpx each, 1 unit)
        codes = [_get(client, f"{base}?n=1&seed={s}", bob).status_code for s in range(19)]
        assert codes == [200] * 19


def test_the_png_cache_is_bounded_by_bytes():
    cache: LRU[bytes] = LRU(100, max_weight=1000, weigh=len)
    for i in range(10):
        cache.put(i, b"x" * 300)
    assert cache.weight <= 1000 and len(cache) == 3
    cache.put("huge", b"x" * 5000)  # bigger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
