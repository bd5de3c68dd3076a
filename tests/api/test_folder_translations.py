"""Folder translations over HTTP: POST …/checkpoints/{ref}/translations with a zip → 202 and a
/v1/translations/{id} resource, run by the worker's own code in this process (as the jobs of
tests/api are), polled to its end; result.zip holds the PNGs POST …/translate makes of the
same images, byte for byte, and report.json names the one that could not be read. Cancel,
owner isolation, leases and the sweep, pruning kept off its checkpoint, delete, and every
refusal a problem+json 4xx naming the field."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.core.db import session_scope
from app.core.models import Checkpoint, Translation
from app.core.serving import folder_runs, scores
from tests.api.conftest import TINY, make_key
from tests.api.test_translate import PAIRED, _settings, _trained, noise_image
from tests.api.upload_helpers import assert_problem, make_zip, store_entries
from worker.folder_runner import run_translation

CORRUPT = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature, then nothing readable


def folder_zip() -> tuple[bytes, dict[str, bytes]]:
    """Five images (one corrupt; one JPEG in a subfolder), a text file and zip-tool junk."""
    images = {
        "photos/a.png": noise_image((40, 30), "L", 1),
        "photos/sub/b.jpg": noise_image((32, 32), "L", 2, fmt="JPEG"),
        "photos/c.png": noise_image((50, 50), "L", 3),
        "photos/d.bmp": noise_image((36, 40), "L", 4, fmt="BMP"),
        "photos/broken.png": CORRUPT,
    }
    junk = {"photos/notes.txt": b"hello", "__MACOSX/photos/._a.png": b"junk"}
    return make_zip({**images, **junk}), images


class Served:
    def __init__(self, settings, client: TestClient, bob: TestClient):
        self.settings, self.client, self.bob = settings, client, bob
        self.paired = _trained(client, settings, PAIRED)
        self.noise = _trained(client, settings, TINY)

    def post(self, data: bytes, ref="latest", job=None, form=True, **params):
        url = f"/v1/jobs/{job or self.paired}/checkpoints/{ref}/translations"
        if form:
            return self.client.post(
                url, files={"file": ("photos.zip", data, "application/zip")}, params=params
            )
        return self.client.post(
            url, content=data, headers={"Content-Type": "application/zip"}, params=params
        )

    def run(self, translation_id: str) -> str:
        return run_translation(translation_id, settings=self.settings)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("folders"))
    alice, bob = make_key(settings, "alice"), make_key(settings, "bob")
    app = create_app(settings)
    with (
        TestClient(app, headers={"Authorization": f"Bearer {alice}"}) as c,
        TestClient(app, headers={"Authorization": f"Bearer {bob}"}) as b,
    ):
        yield Served(settings, c, b)


def test_a_folder_gives_the_pngs_translate_gives_and_reports_the_unreadable(served):
    c = served.client
    data, images = folder_zip()
    latest = c.get(f"/v1/jobs/{served.paired}/checkpoints/latest").json()
    r = served.post(data)
    assert r.status_code == 202, r.text
    made = r.json()
    assert r.headers["location"] == f"/v1/translations/{made['id']}"
    assert made["id"].startswith("tr_") and made["status"] == "queued"
    assert made["checkpoint_id"] == latest["id"]  # 'latest' fixed at submit
    assert made["progress"] == {"done": 0, "total": 5, "failed": 0}
    assert made["report"]["skipped"] == ["photos/notes.txt"]
    assert "result" not in made["links"]
    assert_problem(c.get(f"/v1/translations/{made['id']}/result.zip"), 409, None, "queued")

    assert served.run(made["id"]) == "succeeded"
    done = c.get(r.headers["location"]).json()
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": 5, "total": 5, "failed": 1}
    assert [f["name"] for f in done["report"]["failed"]] == ["photos/broken.png"]
    assert done["report"]["translated"] == 4

    z = c.get(done["links"]["result"])
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        names = sorted(zf.namelist())
        assert names == [
            "photos/a.png",
            "photos/c.png",
            "photos/d.png",
            "photos/sub/b.png",
            "report.json",
        ]
        report = json.loads(zf.read("report.json"))
        assert report["translated"] == 4 and report["skipped"] == ["photos/notes.txt"]
        assert report["failed"][0]["name"] == "photos/broken.png"
        assert "readable" in report["failed"][0]["error"]
        for name, raw in images.items():
            one = c.post(
                f"/v1/jobs/{served.paired}/checkpoints/{made['checkpoint_id']}/translate",
                content=raw,
                headers={"Content-Type": "image/png"},
            )
            if name == "photos/broken.png":  # refused alike, with its status
                assert one.status_code == report["failed"][0]["status"] == 422
                said = one.json()["detail"]  # Pillow's message names an object's address
                assert said.split(" at 0x")[0] == report["failed"][0]["error"].split(" at 0x")[0]
                continue
            assert one.status_code == 200, one.text
            out = name.rsplit(".", 1)[0] + ".png"
            assert zf.read(out) == one.content, name
    assert done["result_bytes"] == len(z.content)

    # owner isolation: bob sees nothing of it and cannot use alice's checkpoints
    b = served.bob
    for method, url in [
        ("GET", f"/v1/translations/{made['id']}"),
        ("GET", f"/v1/translations/{made['id']}/result.zip"),
        ("POST", f"/v1/translations/{made['id']}/cancel"),
        ("DELETE", f"/v1/translations/{made['id']}"),
    ]:
        assert b.request(method, url).status_code == 404, url
    assert b.get("/v1/translations").json()["items"] == []
    r = b.post(
        f"/v1/jobs/{served.paired}/checkpoints/latest/translations",
        content=data,
        headers={"Content-Type": "application/zip"},
    )
    assert r.status_code == 404
    assert made["id"] in [t["id"] for t in c.get("/v1/translations").json()["items"]]

    # delete removes the record and its files
    assert (served.settings.resolved_store_dir / "translations" / made["id"]).is_dir()
    assert c.delete(f"/v1/translations/{made['id']}").status_code == 204
    assert c.get(f"/v1/translations/{made['id']}").status_code == 404
    assert made["id"] not in store_entries(served.settings, "translations")


def test_raw_body_cancel_when_queued_and_delete_refused_while_running(served):
    c = served.client
    data, _ = folder_zip()
    r = served.post(data, form=False, filename="photos.zip")
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["filename"] == "photos.zip"
    canceled = c.post(f"/v1/translations/{queued['id']}/cancel")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert served.run(queued["id"]) == "skipped"  # its message finds nothing to run
    assert_problem(c.post(f"/v1/translations/{queued['id']}/cancel"), 409, None, "canceled")
    assert (
        c.get("/v1/translations", params={"status": "canceled"}).json()["items"][0]["id"]
        == (queued["id"])
    )

    running = served.post(data).json()
    with session_scope(served.settings.resolved_database_url) as s:
        assert folder_runs.claim(s, translation_id=running["id"], worker_id="w1", lease_seconds=60)
    assert_problem(c.delete(f"/v1/translations/{running['id']}"), 409, None, "cancel it first")
    asked = c.post(f"/v1/translations/{running['id']}/cancel").json()
    assert asked["status"] == "running"  # stops after its batch; w1 holds it
    assert served.run(running["id"]) == "skipped"
    for t in (queued, running):
        with session_scope(served.settings.resolved_database_url) as s:
            s.query(Translation).filter_by(id=t["id"]).update({"status": "canceled"})
        assert c.delete(f"/v1/translations/{t['id']}").status_code == 204


def test_a_running_translation_stops_between_batches_when_canceled(served):
    c = served.client
    members = {f"many/{i:04d}.png": noise_image((24, 24), "L", i) for i in range(1200)}
    made = served.post(make_zip(members)).json()
    assert made["progress"]["total"] == 1200
    thread, ended = run_until_progress(served.client, made["id"], served.run)
    now = c.get(f"/v1/translations/{made['id']}").json()
    assert 0 < now["progress"]["done"] < 1200, now  # progress written while it runs
    assert c.post(f"/v1/translations/{made['id']}/cancel").status_code == 202
    thread.join(60)
    assert ended == ["canceled"]
    final = c.get(f"/v1/translations/{made['id']}").json()
    assert final["status"] == "canceled" and final["progress"]["done"] < 1200
    assert "result" not in final["links"]
    assert_problem(c.get(f"/v1/translations/{made['id']}/result.zip"), 409, None, "canceled")
    result = served.settings.resolved_store_dir / "translations" / made["id"] / "result"
    assert not result.exists() or list(result.iterdir()) == []  # the partial zip is gone
    assert c.delete(f"/v1/translations/{made['id']}").status_code == 204


def run_until_progress(
    client, translation_id: str, run: Callable[[str], str]
) -> tuple[threading.Thread, list[str]]:
    """``run(translation_id)`` (the worker's run_translation) in a thread, returned once the
    translation shows progress over the API; the thread and the list its end goes into."""
    ended: list[str] = []
    thread = threading.Thread(target=lambda: ended.append(run(translation_id)))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = client.get(f"/v1/translations/{translation_id}").json()
        if now["status"] == "running" and now["progress"]["done"] > 0:
            return thread, ended
        time.sleep(0.01)
    raise AssertionError(f"no progress: {now}")


def test_a_shutdown_hands_it_back_and_the_next_run_starts_over(served):
    from worker.hooks import SHUTDOWN

    members = {f"many/{i:04d}.png": noise_image((24, 24), "L", i) for i in range(1200)}
    made = served.post(make_zip(members)).json()
    thread, ended = run_until_progress(served.client, made["id"], served.run)
    SHUTDOWN.set()  # as a SIGTERM to the worker would
    try:
        thread.join(60)
    finally:
        SHUTDOWN.clear()
    assert ended == ["released"]
    back = served.client.get(f"/v1/translations/{made['id']}").json()
    assert back["status"] == "queued" and "result" not in back["links"]
    with session_scope(served.settings.resolved_database_url) as s:  # no queue here: unsent
        assert folder_runs.sweep(s, max_attempts=2, requeue_after=60)["to_send"] == [made["id"]]
    assert served.run(made["id"]) == "succeeded"
    done = served.client.get(f"/v1/translations/{made['id']}").json()
    assert done["progress"] == {"done": 1200, "total": 1200, "failed": 0}
    assert served.client.delete(f"/v1/translations/{made['id']}").status_code == 204


def test_a_dead_worker_s_translation_is_requeued_then_failed(served):
    data, _ = folder_zip()
    made = served.post(data).json()
    url = served.settings.resolved_database_url
    with session_scope(url) as s:  # a worker claims it and dies: its lease runs out
        assert folder_runs.claim(s, translation_id=made["id"], worker_id="dead", lease_seconds=-1)
    with session_scope(url) as s:
        swept = folder_runs.sweep(s, max_attempts=2, requeue_after=60)
    assert swept["requeued"] == [made["id"]] and made["id"] in swept["to_send"]
    assert served.client.get(f"/v1/translations/{made['id']}").json()["status"] == "queued"
    with session_scope(url) as s:
        folder_runs.claim(s, translation_id=made["id"], worker_id="dead2", lease_seconds=-1)
        swept = folder_runs.sweep(s, max_attempts=2, requeue_after=60)
    assert swept["failed"] == [made["id"]]
    failed = served.client.get(f"/v1/translations/{made['id']}").json()
    assert failed["status"] == "failed" and "died 2 times" in failed["error"]
    # a queued one whose message could not be sent is sent by the next sweep
    other = served.post(data).json()
    with session_scope(url) as s:
        folder_runs.mark_unsent(s, translation_id=other["id"])
        assert folder_runs.sweep(s, max_attempts=2, requeue_after=60)["to_send"] == [other["id"]]
    assert served.run(other["id"]) == "succeeded"


def test_its_checkpoint_is_kept_from_pruning_until_it_ends(served):
    job = _trained(served.client, served.settings, {**PAIRED, "steps": 4})
    c = served.client
    older = c.get(f"/v1/jobs/{job}/checkpoints").json()["items"][-1]
    data, _ = folder_zip()
    made = served.post(data, ref=older["id"], job=job).json()
    url = served.settings.resolved_database_url
    with session_scope(url) as s:
        protected, pruned = scores.prune_rows(s, job_id=job, keep=1)
    assert protected == {older["step"]} and pruned == []
    assert served.run(made["id"]) == "succeeded"
    with session_scope(url) as s:
        _, pruned = scores.prune_rows(s, job_id=job, keep=1)
        assert s.get(Checkpoint, older["id"]).pruned_at is not None
    assert len(pruned) == 1


def _refusals(served):
    one = noise_image((20, 20), "L", 0)
    return [
        ("not a zip", one, {}, 415, "file", ["not a zip"]),
        ("zip-slip", make_zip({"../evil.png": one}), {}, 422, "file", ["'..'"]),
        ("absolute", make_zip({"/etc/evil.png": one}), {}, 422, "file", ["absolute"]),
        ("no images", make_zip({"a.txt": b"x"}), {}, 422, "file", ["no images"]),
        ("same output", make_zip({"x.png": one, "x.jpg": one}), {}, 422, "file", ["both"]),
        ("direction", make_zip({"x.png": one}), {"direction": "b2a"}, 422, "direction", ["a2b"]),
    ]


def test_refusals_are_problem_json_naming_the_field_and_leave_nothing(served):
    before = store_entries(served.settings, "translations")
    with session_scope(served.settings.resolved_database_url) as s:
        rows_before = s.query(Translation).count()
    for what, data, params, status, field, words in _refusals(served):
        r = served.post(data, **params)
        assert_problem(r, status, field, *words), what
    noise = served.post(make_zip({"x.png": noise_image()}), job=served.noise)
    assert_problem(noise, 409, None, "noise-to-image")
    assert_problem(served.post(b"PK", job="job_nope"), 404, None, "job_nope")
    assert store_entries(served.settings, "translations") == before
    with session_scope(served.settings.resolved_database_url) as s:
        assert s.query(Translation).count() == rows_before


def test_the_upload_caps_apply(tmp_path):
    settings = _settings(tmp_path, max_upload_entries=4, max_upload_pixels=3000)
    key = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        job = _trained(c, settings, PAIRED)
        url = f"/v1/jobs/{job}/checkpoints/latest/translations"

        def post(data: bytes):
            return c.post(url, content=data, headers={"Content-Type": "application/zip"})

        small = noise_image((20, 20), "L", 0)
        many = make_zip({f"{i}.png": small for i in range(5)})
        assert_problem(post(many), 422, "file", "more than 4 entries")
        big = make_zip({"a.png": noise_image((60, 60), "L", 1), "b.png": small})
        assert_problem(post(big), 413, "file", "3000 pixels")
        assert post(make_zip({"a.png": small, "b.png": small})).status_code == 202
        # the owner's unfinished translations are capped like jobs
        for _ in range(settings.max_jobs_per_owner - 1):
            assert post(make_zip({"a.png": small})).status_code == 202
        r = post(make_zip({"a.png": small}))
        assert r.status_code == 429 and "Retry-After" in r.headers
