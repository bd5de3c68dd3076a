"""Two API replicas on one Redis and one Postgres: limits and revocations are shared.

Each replica used to keep its own sampling buckets (two replicas allowed twice the rate) and
its own cache of verified keys (a revoked key worked on for up to 5 s on each).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.conftest import Stack, _need_redis
from tests.tiny import tiny

pytestmark = pytest.mark.integration
TINY = tiny(steps=20, checkpoint_every=10)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, pg_url):
    _need_redis()
    tmp = tmp_path_factory.mktemp("replicas")
    # 16 px, n=64: 16.4 kpx (17 units) per render; a burst of 100 units holds 5 renders
    s = Stack(
        tmp,
        pg_url,
        extra_env={
            "GANFORGE_RENDER_MEGAPIXELS_PER_SECOND": "0.00001",  # a 3-hour window
            "GANFORGE_RENDER_BURST_MEGAPIXELS": "0.1",
            "GANFORGE_SAMPLE_RATE": "0",
        },
    )
    s.start_api()
    s.start_worker()
    second, url2 = s.start_replica()
    try:
        s.wait_ready()
        other = s.replica_client(second, url2)
        yield s, other
    finally:
        s.stop()


def test_the_render_budget_is_one_for_all_replicas(replicas):
    s, other = replicas
    job = s.client.post("/v1/jobs", json={"config": TINY}).json()["id"]
    assert s.wait_status(job, {"succeeded", "failed"})["status"] == "succeeded"
    url = f"/v1/jobs/{job}/checkpoints/latest/samples.png?n=64&seed="
    codes = [(s.client if i % 2 else other).get(f"{url}{i}").status_code for i in range(10)]
    # one process's budget would allow 5 renders; two separate ones would allow 10
    assert codes[:5] == [200] * 5 and codes.count(200) <= 6 and 429 in codes, codes


def test_a_revoked_key_stops_working_at_once_on_every_replica(replicas):
    s, other = replicas
    key = s.create_key("carol")
    headers = {"Authorization": f"Bearer {key}"}
    for client in (s.client, other):  # each replica verifies and remembers the key
        assert client.get("/v1/jobs", headers=headers).status_code == 200
    key_id = "key_" + key.split("_")[2]
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "revoke", key_id],
        env=s.env,
        cwd=s.tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"revoked {key_id}", out  # announced, not "within 5 s"
    time.sleep(0.3)  # the announcement crosses Redis; the cache's own expiry is 5 s
    for client in (s.client, other):
        assert client.get("/v1/jobs", headers=headers).status_code == 401
