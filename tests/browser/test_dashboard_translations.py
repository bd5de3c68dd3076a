"""A translation job's page in Chromium against a real `ganforge serve`: the job made from the
new-job form, its held-out translations and the translate box; and its "Folder translations"
panel: a zip chosen and sent, the list following it to the end by polling (and only while one is
unfinished), result.zip downloaded through the page, a queued one canceled from its row."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.test_translate import noise_image
from tests.api.upload_helpers import make_zip
from tests.browser.conftest import SAMPLES_READY, Browser, sign_in
from tests.integration.conftest import Stack
from tests.tiny import tiny

pytestmark = pytest.mark.integration

TRANSLATION_JOB = {
    "g_width": 8,
    "d_width": 8,
    "batch_size": 2,
    "steps": 6,
    "checkpoint_every": 3,
}


def test_a_translation_job_from_the_form_translates_on_its_page(
    browser: Browser, stack: Stack, ui_key: str, ui: httpx.Client, tmp_path: Path
):
    page = sign_in(browser, stack, ui_key)
    page.goto(stack.url + "/ui/new")
    page.wait_for_function("() => document.querySelectorAll('#f-dataset option').length > 1")
    page.select_option("#f-kind", "paired")
    assert page.locator('[data-kind-fields="noise"]').is_hidden()
    assert page.locator("#f-paired-lambda_l1").is_visible()  # the kind's own fields
    assert page.input_value("#f-paired-lambda_l1") == "100.0"
    assert page.locator("#f-paired-latent_dim").count() == 0  # and not a noise job's
    # the built-in pairs are usable here, the noise datasets are not
    assert not page.locator('#f-paired-dataset option[value="shapes-edges"]').is_disabled()
    assert page.locator('#f-paired-dataset option[value="shapes"]').is_disabled()
    assert page.input_value("#f-paired-dataset") == "shapes-edges"
    page.fill("#f-name", "dash-edges")
    for name, value in TRANSLATION_JOB.items():
        page.fill(f"#f-paired-{name}", str(value))
    page.fill("#f-paired-image_size", "40")  # refused by name: the U-Net halves it 4 times
    page.click("#job-submit")
    error = page.locator("#err-paired-image_size")
    error.wait_for(state="visible")
    assert "multiple of 16" in error.text_content()
    page.fill("#f-paired-image_size", "32")
    with page.expect_request("**/v1/jobs") as sent:
        page.click("#job-submit")
    assert sent.value.post_data_json == {
        "name": "dash-edges",
        "config": {"kind": "paired", **TRANSLATION_JOB},
    }
    page.wait_for_url("**/ui/jobs/job_*")
    job_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    steps = str(TRANSLATION_JOB["steps"])
    # the first translation job on shapes-edges waits for B's extractor (scoring is on here;
    # ~90 s on one thread of a 2-core box), then trains and scores its checkpoints
    page.wait_for_function(SAMPLES_READY, arg=["checkpointStep", steps], timeout=240_000)
    assert page.text_content("#samples-title") == "Translations of held-out inputs"
    assert any(
        urlsplit(u).path.endswith("/translations.png") for _, u, _ in browser.recorder.requests
    )
    assert "input, output, target" in page.text_content("#samples-caption")
    assert page.locator("#timeline-panel").is_hidden()
    assert page.locator("#seed").is_hidden()
    assert page.locator("#direction-box").is_hidden()  # a paired model goes one way

    # translate a file the way a person does: choose it, press the button
    edges = np.zeros((48, 64), dtype=np.uint8)  # not square: centre-cropped to 48, then 32
    edges[10:38, 20] = edges[10:38, 44] = edges[10, 20:45] = edges[37, 20:45] = 255
    path = tmp_path / "edges.png"
    Image.fromarray(edges).save(path)
    page.set_input_files("#translate-file", str(path))
    page.click("#translate-btn")
    page.wait_for_function(
        "() => { const i = document.getElementById('translate-output');"
        " return i.dataset.state === 'ready' && i.complete && i.naturalWidth > 0 }"
    )
    assert page.evaluate("document.getElementById('translate-output').naturalWidth") == 32
    shown = page.evaluate(
        """() => { const img = document.getElementById("translate-output");
        const c = document.createElement("canvas"); c.width = c.height = 32;
        c.getContext("2d").drawImage(img, 0, 0); return c.toDataURL(); }"""
    )
    # the page shows what the API gives for the same file
    api = ui.post(
        f"/v1/jobs/{job_id}/checkpoints/latest/translate",
        content=path.read_bytes(),
        headers={"Content-Type": "image/png"},
    )
    assert api.status_code == 200
    want = np.asarray(Image.open(io.BytesIO(api.content)).convert("RGBA"))
    got = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(shown.split(",", 1)[1]))).convert("RGBA")
    )
    assert np.array_equal(got, want)
    assert "step " + steps in page.text_content("#translate-caption")

    # a refused image: the server's reason, shown on the page
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    page.set_input_files("#translate-file", str(bad))
    page.click("#translate-btn")
    page.locator("#translate-error").wait_for(state="visible")
    assert page.text_content("#translate-error").strip()
    page.screenshot(path=browser.shots / "translation-job.png", full_page=True)


def _finished(ui: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ui.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture(scope="module")
def edges_job(stack: Stack, ui: httpx.Client) -> str:
    """A trained pix2pix job on the built-in pairs (made over /v1: the form has its own test)."""
    r = ui.post(
        "/v1/jobs", json={"name": "folders", "config": {"kind": "paired", **TRANSLATION_JOB}}
    )
    assert r.status_code == 202, r.text
    assert _finished(ui, r.json()["id"])["status"] == "succeeded"
    return str(r.json()["id"])


def _list_calls(browser: Browser, job_id: str) -> int:
    """How many times the page asked for this job's folder translations."""
    return sum(
        1
        for method, url, _ in browser.recorder.requests
        if method == "GET"
        and urlsplit(url).path == "/v1/translations"
        and parse_qs(urlsplit(url).query).get("job_id") == [job_id]
    )


def _row(page, ui: httpx.Client, translation_id: str, status: str):
    """The translation's row, once the page shows it with ``status``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    row = f'#folder-body tr[data-translation-id="{translation_id}"]'
    try:
        page.wait_for_selector(f'{row}[data-status="{status}"]', timeout=120_000)
    except PlaywrightTimeout:
        said = ui.get(f"/v1/translations/{translation_id}").json()
        raise AssertionError((status, said, page.inner_html("#folders-panel"))) from None
    return page.locator(row)


def test_a_folder_is_sent_followed_downloaded_and_canceled_from_the_job_page(
    browser: Browser, stack: Stack, ui_key: str, ui: httpx.Client, edges_job: str, tmp_path: Path
):
    page = sign_in(browser, stack, ui_key)
    page.goto(f"{stack.url}/ui/jobs/{edges_job}")
    page.locator("#folders-panel").wait_for(state="visible")
    page.locator("#folder-placeholder").wait_for(state="visible")
    assert page.locator("#folder-table").is_hidden()
    assert page.locator("#folder-direction-box").is_hidden()  # a paired model goes one way

    page.click("#folder-btn")  # nothing chosen yet: said on the page, nothing sent
    page.locator("#folder-error").wait_for(state="visible")
    assert "zip" in page.text_content("#folder-error")

    images = {f"sketches/s{i}.png": noise_image((40, 30), "L", i) for i in range(4)}
    photos = tmp_path / "sketches.zip"
    photos.write_bytes(make_zip({**images, "sketches/broken.png": b"\x89PNG not really"}))
    page.set_input_files("#folder-file", str(photos))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#folder-btn")
    sent = answer.value
    assert sent.status == 202
    assert urlsplit(sent.url).path == f"/v1/jobs/{edges_job}/checkpoints/latest/translations"
    assert "multipart/form-data" in sent.request.headers["content-type"]
    made = sent.json()
    assert page.locator("#folder-error").is_hidden()
    # the page polls it to its end: no reload, no event stream
    row = _row(page, ui, made["id"], "succeeded")
    assert row.locator(".folder-file").text_content() == "sketches.zip"
    assert row.locator(".status").text_content() == "succeeded"
    assert "5 of 5 (1 not translated)" in row.text_content()
    assert row.locator("progress").evaluate("p => p.value === p.max")
    assert row.locator(".folder-cancel").is_hidden()
    done = ui.get(f"/v1/translations/{made['id']}").json()
    assert row.locator("td").nth(1).text_content() == str(done["checkpoint_step"])

    # result.zip through the page (fetched with the key, saved by the browser)
    with page.expect_download() as saved:
        row.locator(".folder-download").click()
    got = Path(saved.value.path()).read_bytes()
    assert saved.value.suggested_filename == "sketches-translated.zip"
    assert got == ui.get(done["links"]["result"]).content
    with zipfile.ZipFile(io.BytesIO(got)) as zf:
        assert sorted(zf.namelist()) == sorted([n for n in images] + ["report.json"])

    # all finished: the polling stops
    calls = _list_calls(browser, edges_job)
    time.sleep(3)
    assert _list_calls(browser, edges_job) == calls

    # a translation waiting behind a training job (one worker) is canceled from its row
    blocker = ui.post("/v1/jobs", json={"name": "blocker", "config": tiny(steps=100_000)})
    assert blocker.status_code == 202, blocker.text
    blocker_id = blocker.json()["id"]
    deadline = time.monotonic() + 120
    while ui.get(f"/v1/jobs/{blocker_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    try:
        page.set_input_files("#folder-file", str(photos))
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("#folder-btn")
        waiting = answer.value.json()["id"]
        row = _row(page, ui, waiting, "queued")
        assert "0 of 5" in row.text_content()
        assert row.locator(".folder-download").is_hidden()
        # newest first
        ids = page.eval_on_selector_all(
            "#folder-body tr", "rows => rows.map((r) => r.dataset.translationId)"
        )
        assert ids == [waiting, made["id"]]
        row.locator(".folder-cancel").click()
        _row(page, ui, waiting, "canceled")
        assert ui.get(f"/v1/translations/{waiting}").json()["status"] == "canceled"
        assert row.locator(".folder-cancel").is_hidden()
        assert row.locator(".folder-download").is_hidden()
        page.screenshot(path=browser.shots / "folder-translations.png", full_page=True)
    finally:
        ui.post(f"/v1/jobs/{blocker_id}/cancel")
    assert _finished(ui, blocker_id)["status"] == "canceled"

    rec = browser.recorder
    for _, url, headers in rec.requests:  # the key goes to /v1 and nowhere else
        assert urlsplit(url).path.startswith("/v1/") == ("authorization" in headers), url
    csp = [m for m in rec.console_errors if "Content Security Policy" in m]
    assert not csp and not rec.page_errors, (csp, rec.page_errors)
