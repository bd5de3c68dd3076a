"""A checkpoint upload when the S3 store goes away for a while, or for good: a worker that
reaches moto's standalone server through a relay that resets every connection on demand
(the moto server itself keeps its bucket: restarting it would lose it)."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time

import pytest

from tests.integration import test_s3_store
from tests.integration.conftest import Proc, Stack, _need_redis
from tests.integration.test_s3_store import BUCKET, steps_in_bucket
from tests.tiny import tiny

pytestmark = pytest.mark.integration
s3 = test_s3_store.s3  # moto's server with the bucket (a server of this module's own)


class FlakyRelay:
    """A TCP relay in front of the moto server that can be 'down' (every connection reset):
    the first checkpoint upload through it starts an outage of ``outage`` seconds."""

    def __init__(self, target: int, outage: float):
        self.target, self.outage = target, outage
        self.down_until, self.resets = 0.0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _down(self) -> bool:
        return time.monotonic() < self.down_until

    def _reset(self, *conns: socket.socket) -> None:
        for conn in conns:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        self.resets += 1

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._down():
                self._reset(conn)
            else:
                threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    client.sendall(data)

        threading.Thread(target=back, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.outage and data.startswith(b"PUT ") and b"/checkpoints/" in data[:300]:
                    self.down_until, self.outage = time.monotonic() + self.outage, 0.0
                if self._down():
                    self._reset(client, upstream)
                    return
                upstream.sendall(data)

    def close(self) -> None:
        self.down_until = 0.0
        self.sock.close()


def _fleet_behind(relay: FlakyRelay, tmp, pg_url, s3) -> Stack:
    """serve on the bucket, and one worker that reaches it only through the relay."""
    s = Stack(tmp, pg_url, extra_env={**s3, "GANFORGE_STORE_URL": f"s3://{BUCKET}/flaky"})
    s.start_api()
    env = {**s.env, "GANFORGE_DATA_DIR": str(tmp / "w"), "AWS_ENDPOINT_URL": relay.url}
    args = [sys.executable, "-m", "app.cli", "worker", "--hostname", "w@flaky"]
    s.workers.append(Proc(args, env, tmp / "worker.log"))
    s.wait_ready()
    return s


@pytest.mark.parametrize("outage", [6.0, float("inf")], ids=["for-a-while", "for-good"])
def test_a_checkpoint_upload_outlasts_a_store_outage_or_fails_the_job_saying_so(
    s3, pg_url, tmp_path, outage
):
    """The bucket goes away as the first checkpoint goes up (its connections reset): for
    6 s (far longer than boto3's own retries last) the upload is tried again until it lands
    and the job succeeds; for good, the job fails naming the store and the tries."""
    _need_redis()
    relay = FlakyRelay(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), outage)
    s = _fleet_behind(relay, tmp_path, pg_url, s3)
    try:
        config = tiny(steps=20, checkpoint_every=10)
        job_id = s.client.post("/v1/jobs", json={"config": config}).json()["id"]
        done = s.wait_status(job_id, {"succeeded", "failed", "canceled"})
        log = s.workers[0].tail(400)
        assert relay.resets > 0, log  # the store was away
        assert "failed (try 1 of 5), trying again in 1 s" in log, log
        if outage == float("inf"):
            assert done["status"] == "failed", done
            assert done["error"].startswith("could not write to the artifact store: could not ")
            assert f"s3://{BUCKET}" in done["error"] and "(tried 5 times over" in done["error"]
            assert s.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"] == []
            return
        assert done["status"] == "succeeded", (done, log)
        items = s.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
        assert [c["step"] for c in items] == [20, 10]
        assert steps_in_bucket("flaky", job_id) == {10, 20}
        r = s.client.get(f"/v1/jobs/{job_id}/checkpoints/{items[1]['id']}/samples.png?n=4")
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    finally:
        s.stop()
        relay.close()
