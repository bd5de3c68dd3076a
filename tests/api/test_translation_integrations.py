"""Folder translations seen from outside: GET /v1/translations?job_id=, their gauges in
GET /metrics (read from the database, as jobs' are), and the webhook events of their job."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.api.conftest import make_key
from tests.api.test_folder_translations import folder_zip
from tests.api.test_telemetry import _value, scrape
from tests.api.test_translate import PAIRED, _settings, _trained
from tests.api.upload_helpers import assert_problem
from worker.folder_runner import run_translation


class Served:
    def __init__(self, settings, client: TestClient):
        self.settings, self.client = settings, client
        self.paired = _trained(client, settings, PAIRED)

    def submit(self, job_id: str) -> str:
        data, _ = folder_zip()
        r = self.client.post(
            f"/v1/jobs/{job_id}/checkpoints/latest/translations",
            files={"file": ("photos.zip", data, "application/zip")},
        )
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def run(self, translation_id: str) -> str:
        return run_translation(translation_id, settings=self.settings)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("integrations"), webhook_allow_private=True)
    alice = make_key(settings, "alice")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {alice}"}) as c:
        yield Served(settings, c)


def _gauges(client) -> tuple[dict[str, float], dict[str, float]]:
    m = scrape(client)
    statuses = ("queued", "running", "succeeded", "failed", "canceled")
    by_status = {
        s: _value(m["ganforge_translations"], "ganforge_translations", status=s) for s in statuses
    }
    images = {
        o: _value(m["ganforge_translation_images"], "ganforge_translation_images", outcome=o)
        for o in ("translated", "failed")
    }
    return by_status, images


def test_metrics_count_translations_by_status_and_the_images_they_handled(served):
    c = served.client
    by_status, images = _gauges(c)
    first = served.submit(served.paired)
    after, _ = _gauges(c)
    assert after["queued"] == by_status["queued"] + 1
    assert served.run(first) == "succeeded"  # 4 images translated, 1 unreadable
    done, handled = _gauges(c)
    assert done["queued"] == by_status["queued"]
    assert done["succeeded"] == by_status["succeeded"] + 1
    assert handled == {"translated": images["translated"] + 4, "failed": images["failed"] + 1}
    second = served.submit(served.paired)
    assert c.post(f"/v1/translations/{second}/cancel").status_code == 202
    assert _gauges(c)[0]["canceled"] == by_status["canceled"] + 1


def test_the_list_filters_by_job(served):
    c = served.client
    other = _trained(c, served.settings, PAIRED)
    mine = served.submit(other)
    theirs = served.submit(served.paired)
    listed = c.get("/v1/translations", params={"job_id": other}).json()["items"]
    assert [t["id"] for t in listed] == [mine]
    listed = c.get("/v1/translations", params={"job_id": served.paired}).json()["items"]
    assert theirs in [t["id"] for t in listed] and mine not in [t["id"] for t in listed]
    assert all(t["job_id"] == served.paired for t in listed)
    both = [t["id"] for t in c.get("/v1/translations").json()["items"]]
    assert {mine, theirs} <= set(both)
    assert c.get("/v1/translations", params={"job_id": "job_0000000000000000"}).json() == {
        "items": [],
        "next_cursor": None,
    }
    assert_problem(c.get("/v1/translations", params={"job_id": "j" * 41}), 422, "job_id")
    for t in (mine, theirs):
        c.post(f"/v1/translations/{t}/cancel")
