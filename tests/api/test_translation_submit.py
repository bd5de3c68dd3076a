"""Submitting folder translations over HTTP: an Idempotency-Key returns the first translation
for the same request (job, ref, direction, ema, zip bytes) and is a 409 for another; deleting
a job cancels its queued and running translations, a running one's real worker stopping; a
translation's inputs and result count toward the owner's storage quota (413 for a zip that
would pass it, 409 once it is full, for translations and jobs alike)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.db import session_scope
from app.core.models import Translation
from tests.api.conftest import TINY, make_key
from tests.api.test_folder_translations import folder_zip, run_until_progress
from tests.api.test_translate import PAIRED, _settings, _trained, noise_image
from tests.api.upload_helpers import assert_problem, make_zip, store_entries
from worker.folder_runner import run_translation


class Served:
    def __init__(self, settings, client: TestClient, bob: TestClient, keys: dict[str, str]):
        self.settings, self.client, self.bob, self.keys = settings, client, bob, keys
        self.paired = _trained(client, settings, PAIRED)

    def url(self, job: str | None = None, ref: str = "latest") -> str:
        return f"/v1/jobs/{job or self.paired}/checkpoints/{ref}/translations"

    def post(self, data: bytes, key: str | None = None, client=None, job=None, ref="latest", **q):
        headers = {"Idempotency-Key": key} if key else {}
        return (client or self.client).post(
            self.url(job, ref),
            files={"file": ("photos.zip", data, "application/zip")},
            params=q,
            headers=headers,
        )

    def messages(self, translation_id: str) -> int:
        """Messages for this translation waiting in the (embedded, filesystem) broker."""
        queue = self.settings.broker_dir / "queue"
        return sum(1 for p in queue.iterdir() if translation_id in p.read_text())

    def rows(self) -> int:
        with session_scope(self.settings.resolved_database_url) as s:
            return s.query(Translation).count()

    def limited(self, quota: int) -> TestClient:
        """Another server on the same database and store, with this storage quota."""
        settings = self.settings.model_copy(update={"max_stored_bytes_per_owner": quota})
        return TestClient(
            create_app(settings), headers={"Authorization": f"Bearer {self.keys['alice']}"}
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("submit"))
    keys = {name: make_key(settings, name) for name in ("alice", "bob")}
    app = create_app(settings)
    with (
        TestClient(app, headers={"Authorization": f"Bearer {keys['alice']}"}) as c,
        TestClient(app, headers={"Authorization": f"Bearer {keys['bob']}"}) as b,
    ):
        yield Served(settings, c, b, keys)


def test_an_idempotency_key_returns_the_first_translation_for_the_same_request(served):
    c = served.client
    data, _ = folder_zip()
    first = served.post(data, key="folder-1")
    assert first.status_code == 202, first.text
    made = first.json()
    assert served.messages(made["id"]) == 1
    rows = served.rows()
    entries = store_entries(served.settings, "translations")

    again = served.post(data, key="folder-1")  # a retry: the same record, no second message
    assert again.status_code == 202, again.text
    assert again.json()["id"] == made["id"]
    assert (
        again.headers["location"] == first.headers["location"] == f"/v1/translations/{made['id']}"
    )
    raw = c.post(  # the same bytes as a raw body are the same request
        served.url(),
        content=data,
        headers={"Content-Type": "application/zip", "Idempotency-Key": "folder-1"},
    )
    assert raw.status_code == 202 and raw.json()["id"] == made["id"]
    assert served.messages(made["id"]) == 1
    assert served.rows() == rows
    assert store_entries(served.settings, "translations") == entries

    # the same key with another request: another zip, ref, ema or direction
    other_zip = make_zip({"x.png": noise_image((20, 20), "L", 9)})
    ckpt = made["checkpoint_id"]
    for what, r in [
        ("zip", served.post(other_zip, key="folder-1")),
        ("ref", served.post(data, key="folder-1", ref=ckpt)),
        ("ema", served.post(data, key="folder-1", ema="false")),
        ("direction", served.post(data, key="folder-1", direction="b2a")),
    ]:
        assert_problem(r, 409, "Idempotency-Key", "different request"), what
    assert served.rows() == rows
    assert store_entries(served.settings, "translations") == entries

    # a replay is not held to the limits a new translation is (a quota of 0 here)
    with served.limited(0) as full:
        assert_problem(served.post(data, client=full), 409, None, "storage quota")
        replay = served.post(data, key="folder-1", client=full)
        assert replay.status_code == 202 and replay.json()["id"] == made["id"]

    # keys are per owner: bob's "folder-1" is not alice's (and her job is not his to use)
    assert served.post(data, key="folder-1", client=served.bob).status_code == 404
    # another key is another translation; the first key is free again once it is deleted
    assert served.post(data, key="folder-2").json()["id"] != made["id"]
    assert c.delete(f"/v1/translations/{made['id']}").status_code == 204
    anew = served.post(data, key="folder-1")
    assert anew.status_code == 202 and anew.json()["id"] != made["id"]


def test_deleting_a_job_cancels_its_queued_and_running_translations(served):
    c = served.client
    job = _trained(c, served.settings, PAIRED)
    data, _ = folder_zip()
    finished = served.post(data, job=job).json()
    assert run_translation(finished["id"], settings=served.settings) == "succeeded"
    queued = served.post(data, job=job).json()
    many = make_zip({f"many/{i:04d}.png": noise_image((24, 24), "L", i) for i in range(1200)})
    running = served.post(many, job=job).json()
    elsewhere = served.post(data).json()  # another job's: untouched
    thread, ended = run_until_progress(
        served.client, running["id"], lambda t: run_translation(t, settings=served.settings)
    )

    assert c.delete(f"/v1/jobs/{job}").status_code == 204
    thread.join(60)
    assert ended == ["lost"]  # its worker found the lease gone and stopped, writing nothing
    for t in (queued, running):
        now = c.get(f"/v1/translations/{t['id']}").json()
        assert now["status"] == "canceled", now
        assert f"job {job} was deleted" in now["error"]
        assert now["finished_at"] and "cancel" not in now["links"]
        assert_problem(c.get(f"/v1/translations/{t['id']}/result.zip"), 409, None, "canceled")
    assert run_translation(queued["id"], settings=served.settings) == "skipped"
    result = served.settings.resolved_store_dir / "translations" / running["id"] / "result"
    assert not result.exists() or list(result.iterdir()) == []  # the partial zip is gone
    # a finished one keeps its result; another job's is still queued
    assert c.get(f"/v1/translations/{finished['id']}/result.zip").status_code == 200
    assert c.get(f"/v1/translations/{elsewhere['id']}").json()["status"] == "queued"
    # their files go with their records, as before
    for t in (finished, queued, running):
        assert c.delete(f"/v1/translations/{t['id']}").status_code == 204
        assert t["id"] not in store_entries(served.settings, "translations")


def _inputs(served, translation_id: str) -> int:
    """The bytes of a translation's unpacked inputs, as they lie in the store."""
    folder = served.settings.resolved_store_dir / "translations" / translation_id / "inputs"
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _used(served) -> int:
    """Alice's stored bytes: her checkpoints' sizes and her translations' results as the API
    shows them, and their inputs as they lie in the store (this module's jobs use the
    built-in procedural dataset: no uploaded dataset)."""
    c = served.client
    used = 0
    for job in c.get("/v1/jobs", params={"limit": 100}).json()["items"]:
        ckpts = c.get(f"/v1/jobs/{job['id']}/checkpoints").json()
        used += sum(k["size_bytes"] for k in ckpts["items"])
    for t in c.get("/v1/translations", params={"limit": 100}).json()["items"]:
        used += _inputs(served, t["id"]) + (t["result_bytes"] or 0)
    return used


def test_translations_count_toward_the_storage_quota(served):
    data, _ = folder_zip()
    probe = served.post(data).json()
    size = _inputs(served, probe["id"])
    assert size > 0
    used = _used(served)
    rows, entries = served.rows(), store_entries(served.settings, "translations")

    # one byte short of room for the same inputs: 413 naming file and the limit, nothing kept
    with served.limited(used + size - 1) as tight:
        body = assert_problem(tight.post(served.url(), files={"file": ("p.zip", data)}), 413)
        assert "quota" in body["detail"] and str(used + size - 1) in body["detail"]
        assert "GANFORGE_MAX_STORED_BYTES_PER_OWNER" in body["detail"]
    assert served.rows() == rows
    assert store_entries(served.settings, "translations") == entries

    with served.limited(used + size) as room:  # exactly room for them
        fits = room.post(served.url(), files={"file": ("p.zip", data)})
        assert fits.status_code == 202, fits.text
    assert _used(served) == used + size
    with served.limited(used + size - 1) as over:  # past it: refused before the body is read
        assert_problem(over.post(served.url(), content=b"PK"), 409, None, "storage quota")
        job = over.post("/v1/jobs", json={"name": "more", "config": TINY})  # and so is a job
        assert_problem(job, 409, None, "storage quota")

    # a result counts too, once it lands
    assert run_translation(probe["id"], settings=served.settings) == "succeeded"
    result = served.client.get(f"/v1/translations/{probe['id']}").json()["result_bytes"]
    assert result > 0
    assert _used(served) == used + size + result
    with served.limited(used + size + result - 1) as now_full:  # not full before it landed
        r = now_full.post(served.url(), files={"file": ("p.zip", data)})
        assert_problem(r, 409, None, "storage quota")
    # deleting a translation gives its room back
    assert served.client.delete(f"/v1/translations/{probe['id']}").status_code == 204
    assert _used(served) == used  # probe's inputs and result gone, the fitting one's added
