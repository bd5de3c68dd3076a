"""The dashboard used the way a person uses it, in Chromium against a real `ganforge serve`:
the key form, the new-job form, a job page following its event stream to the end, the
sample grid, the checkpoint picker and the job's actions; and the key never leaking.

Screenshots land in the test's tmp dir. DASHBOARD_SCREENSHOT_DIR=docs also copies the job page's
to docs/dashboard.png, the README's picture (any DIR gets DIR/dashboard.png), on purpose only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from app.dashboard.pages import CSP
from tests.browser.conftest import SAMPLES_READY, Browser, sign_in
from tests.integration.conftest import Stack
from tests.tiny import tiny

pytestmark = pytest.mark.integration

TINY_JOB = tiny(steps=300, checkpoint_every=50)
FORM_FIELDS = [
    "dataset",
    "image_size",
    "channels",
    "arch",
    "conditional",
    "loss",
    "steps",
    "batch_size",
    "g_width",
    "d_width",
    "latent_dim",
    "g_lr",
    "d_lr",
    "ema_decay",
    "augment",
    "seed",
    "checkpoint_every",
    "keep_checkpoints",
    "precision",
    "devices",
]
# The grid as the page decoded it (a canvas of the <img>, not the bytes on the wire).
GRID_PIXELS = """() => {
  const img = document.getElementById("samples");
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.getContext("2d").drawImage(img, 0, 0);
  return canvas.toDataURL();
}"""


def test_pages_hold_no_data_and_carry_a_strict_policy(stack: Stack):
    for path in ("/", "/ui/new", "/ui/jobs/job_x%22%3E%3Cb%3E", "/ui/static/job.js"):
        r = httpx.get(stack.url + path)  # no key: the pages are not secret
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-content-type-options"] == "nosniff"
        if path.endswith(".js"):
            assert r.headers["content-type"].split(";")[0] in (
                "text/javascript",
                "application/javascript",
            )
            continue
        html = r.text
        assert re.findall(r"<script[^>]*>", html) and all(
            " src=" in tag for tag in re.findall(r"<script[^>]*>", html)
        ), "no inline scripts"
        assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
        assert " style=" not in html and "<style" not in html, "no inline styles"
        assert "http://" not in html and "https://" not in html, "nothing from elsewhere"
    assert (
        'data-job-id="job_x&quot;&gt;&lt;b&gt;"'
        in httpx.get(stack.url + "/ui/jobs/job_x%22%3E%3Cb%3E").text
    )
    form = httpx.get(stack.url + "/ui/new").text
    for name in FORM_FIELDS:
        assert f'id="f-{name}"' in form, name


def test_event_stream_parser_takes_any_chunking(browser: Browser, stack: Stack):
    browser.page.goto(stack.url + "/")
    # the page's own parser, in the browser, fed the same stream cut at every size
    results = browser.page.evaluate(
        r"""async () => {
          const { parseEvents } = await import("/ui/static/api.js");
          const text = 'id: 1\nevent: job\ndata: {"a":1}\n\n: keep-alive\n\n'
            + "id: 2\r\nevent: checkpoint\r\ndata: x\r\ndata: yé\r\n\r\n"
            + "id: 3\nevent: job\ndata: cut off";
          const out = [];
          for (const size of [1, 2, 3, 5, 8, 1000]) {
            const bytes = new TextEncoder().encode(text);
            const body = new ReadableStream({ start(c) {
              for (let i = 0; i < bytes.length; i += size) c.enqueue(bytes.slice(i, i + size));
              c.close();
            } });
            const events = [];
            for await (const ev of parseEvents(body)) events.push(ev);
            out.push(events);
          }
          return out;
        }"""
    )
    expected = [
        {"id": "1", "event": "job", "data": '{"a":1}'},
        {"id": "2", "event": "checkpoint", "data": "x\nyé"},
    ]  # the comment skipped, é whole across chunks, the unfinished last event dropped
    assert results == [expected] * 6


def test_key_form_keeps_the_key_in_this_tab_only(browser: Browser, stack: Stack, ui_key: str):
    page = browser.page
    page.goto(stack.url + "/")
    assert page.locator("#key-section").is_visible()
    assert not page.locator("#jobs-section").is_visible()
    page.fill("#key-input", "gf_not_a_key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-error:not([hidden])")
    assert "refused" in page.text_content("#key-error")
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#key-input", ui_key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#jobs-section", state="visible")
    page.wait_for_selector("#jobs-empty:not([hidden])")  # a new key: nothing yet
    assert page.evaluate("Object.values(sessionStorage)") == [ui_key]
    assert page.evaluate("localStorage.length") == 0
    assert page.input_value("#key-input") == "" and ui_key not in page.content()
    assert page.url == stack.url + "/"

    page.click("#forget-key")
    page.wait_for_selector("#key-section", state="visible")
    assert page.evaluate("sessionStorage.length") == 0
    sign_in(browser, stack, ui_key)


def test_new_job_form_shows_an_error_next_to_its_input(
    browser: Browser, stack: Stack, ui_key: str, ui: httpx.Client
):
    page = sign_in(browser, stack, ui_key)
    page.click("nav >> text=New job")
    page.wait_for_function("() => document.querySelectorAll('#f-dataset option').length > 1")
    # Each one offered; unavailable ones, and pairs (for translation jobs), disabled.
    for ds in ui.get("/v1/datasets").json()["items"]:
        option = page.locator(f'#f-dataset option[value="{ds["id"]}"]')
        assert option.is_disabled() == (not ds["available"] or ds["pairing"] is not None), ds
    assert (
        "for paired translation jobs"
        in page.locator('#f-dataset option[value="shapes-edges"]').inner_text()
    )
    assert page.locator('[data-kind-fields="paired"]').is_hidden()
    assert page.input_value("#f-image_size") == "32"  # defaults from TrainConfig
    assert page.locator("#f-arch option").all_text_contents() == ["dcgan", "mlp", "resnet"]

    page.fill("#f-image_size", "100")
    with page.expect_request("**/v1/jobs") as sent:
        page.click("#job-submit")
    assert sent.value.post_data_json == {"name": "job", "config": {"image_size": 100}}
    error = page.locator("#err-image_size")
    error.wait_for(state="visible")
    assert "100px" in error.text_content()
    assert page.get_attribute("#f-image_size", "aria-invalid") == "true"
    assert page.locator("#job-form-error").is_hidden()
    assert page.locator(".error:not([hidden])").count() == 1  # only where it belongs
    page.screenshot(path=browser.shots / "new-job-form.png", full_page=True)
    assert ui.get("/v1/jobs").json()["items"] == []


def test_upload_form_adds_the_dataset_to_the_select(
    browser: Browser, stack: Stack, ui_key: str, tmp_path
):
    x = np.random.default_rng(0).integers(0, 255, (10, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "digits.npz", x=x)
    page = sign_in(browser, stack, ui_key)
    page.click("nav >> text=Upload dataset")
    page.wait_for_function("() => document.querySelectorAll('#f-dataset option').length > 1")
    page.set_input_files("#upload-file", tmp_path / "digits.npz")
    page.fill("#upload-name", "ten-digits")
    with page.expect_request("**/v1/datasets") as sent:
        page.click("#upload-form button[type=submit]")
    assert sent.value.headers["content-type"].startswith("multipart/form-data")
    page.wait_for_selector("#upload-result:has-text('ten-digits')")
    chosen = page.eval_on_selector("#f-dataset", "s => s.selectedOptions[0].textContent")
    assert chosen.startswith("ten-digits (ds_") and "10 images" in chosen, chosen
    assert page.locator("#upload-error").is_hidden()


def test_a_401_leads_to_the_key_form_and_back(browser: Browser, stack: Stack, ui_key: str):
    page = sign_in(browser, stack, ui_key)
    page.evaluate("sessionStorage.setItem('ganforge.key', 'gf_revoked_or_wrong')")
    page.goto(stack.url + "/ui/new")
    page.wait_for_selector("#key-section", state="visible")
    assert (
        page.url == stack.url + "/" and page.evaluate("sessionStorage.length") == 1
    )  # where to return
    page.fill("#key-input", ui_key)
    page.click("#key-form button[type=submit]")
    page.wait_for_url(stack.url + "/ui/new")


def test_a_job_from_the_form_trains_live_on_its_page(
    browser: Browser, stack: Stack, ui_key: str, ui: httpx.Client
):
    page = sign_in(browser, stack, ui_key)
    page.goto(stack.url + "/ui/new")
    page.wait_for_function("() => document.querySelectorAll('#f-dataset option').length > 1")
    page.fill("#f-name", "dash-demo")
    page.select_option("#f-dataset", TINY_JOB["dataset"])  # the default: not sent
    for name, value in TINY_JOB.items():
        if name != "dataset":
            page.fill(f"#f-{name}", str(value))

    # The first event stream is cut short after one event, as a dropped connection would be:
    # the page must reconnect with Last-Event-ID and get the rest from the server.
    streams: list[dict[str, str]] = []

    def first_stream_drops(route, request):
        streams.append(request.all_headers())
        if len(streams) > 1:
            return route.continue_()
        job_id = urlsplit(request.url).path.split("/")[3]
        job = stack.client.get(f"/v1/jobs/{job_id}").json()
        route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream"},
            body=f"id: 1\nevent: job\ndata: {json.dumps(job)}\n\n",
        )

    page.route("**/v1/jobs/*/events", first_stream_drops)
    with page.expect_request("**/v1/jobs") as sent:
        page.click("#job-submit")
    config = {k: v for k, v in TINY_JOB.items() if k != "dataset"}
    assert sent.value.post_data_json == {"name": "dash-demo", "config": config}
    page.wait_for_url("**/ui/jobs/job_*")
    job_id = urlsplit(page.url).path.rsplit("/", 1)[1]

    values, phases, deadline = [], [], time.monotonic() + 150
    while time.monotonic() < deadline:
        value, status, phase = page.evaluate(
            "[document.getElementById('job-progress').value,"
            " document.getElementById('job-status').dataset.status,"
            " document.getElementById('job-phase').dataset.phase]"
        )
        if not values or value != values[-1]:
            values.append(value)
        if not phases or phase != phases[-1][0]:
            phases.append((phase, value, page.text_content("#job-phase")))
        if status in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.03)
    page.unroute("**/v1/jobs/*/events")
    assert status == "succeeded", (status, stack.logs())
    # the first job on this data waits at step 0 while its scorer is prepared, and says so
    assert ("preparing_scorer", 0, "preparing scorer") in phases, phases
    assert ("training", "training") in [(p, text) for p, _, text in phases], phases
    assert phases[-1] == ("", TINY_JOB["steps"], ""), phases  # none once it has ended
    assert sum(b > a for a, b in zip(values, values[1:], strict=False)) >= 2, values
    assert (
        values[-1]
        == TINY_JOB["steps"]
        == page.evaluate("document.getElementById('job-progress').max")
    )
    assert "last-event-id" not in streams[0] and streams[1]["last-event-id"] == "1", streams
    assert all(s["authorization"] == f"Bearer {ui_key}" for s in streams)
    # the status came through the stream: the page never asked for the job itself
    asked = [u for m, u, _ in browser.recorder.requests if urlsplit(u).path == f"/v1/jobs/{job_id}"]
    assert not asked, asked

    page.wait_for_function(SAMPLES_READY, arg=["checkpointStep", str(TINY_JOB["steps"])])
    assert page.locator("#label-box").is_hidden()  # an unconditional model takes no label
    assert page.evaluate("document.getElementById('samples').src").startswith("blob:")
    seed0 = page.evaluate(GRID_PIXELS)
    page.fill("#seed", "7")
    page.press("#seed", "Enter")
    page.wait_for_function(SAMPLES_READY, arg=["seed", "7"])
    assert page.evaluate(GRID_PIXELS) != seed0

    job = ui.get(f"/v1/jobs/{job_id}").json()
    ckpts = ui.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    best = next(c for c in ckpts if c["best"])
    assert best["id"] == job["best_checkpoint_id"]
    other = next(c for c in ckpts if not c["best"])
    page.select_option("#ckpt-select", other["id"])
    page.wait_for_function(SAMPLES_READY, arg=["checkpointId", other["id"]])
    assert page.get_attribute("#samples", "data-checkpoint-step") == str(other["step"])
    assert "★ best" in page.text_content(f'#ckpt-select option[value="{best["id"]}"]')
    page.select_option("#ckpt-select", "best")
    page.wait_for_function(SAMPLES_READY, arg=["checkpointId", best["id"]])
    assert f"step {best['step']}" in page.text_content("#samples-caption")
    for picture in ("losses", "timeline"):
        page.wait_for_function(
            "id => { const i = document.getElementById(id);"
            " return i.dataset.state === 'ready' && i.complete && i.naturalWidth > 0 }",
            arg=picture,
        )
    shot = browser.shots / "job-page.png"
    page.screenshot(path=shot, full_page=True)
    if out := os.environ.get("DASHBOARD_SCREENSHOT_DIR"):  # on purpose only (docs/ is tracked)
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(out) / "dashboard.png")

    page.click("a.brand")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for()
    assert row.locator("td").nth(1).text_content() == "succeeded"
    assert row.locator("progress").evaluate("p => p.value === p.max")
    page.screenshot(path=browser.shots / "jobs-list.png", full_page=True)


def test_cancel_resume_and_delete_from_the_job_page(
    browser: Browser, stack: Stack, ui_key: str, ui: httpx.Client
):
    page = sign_in(browser, stack, ui_key)
    r = ui.post(
        "/v1/jobs",
        json={"name": "to-cancel", "config": tiny(steps=1_000_000, checkpoint_every=100_000)},
    )
    job_id = r.json()["id"]
    stack.wait_step(job_id, 1)
    page.goto(f"{stack.url}/ui/jobs/{job_id}")
    page.wait_for_selector('#job-status[data-status="running"]')
    page.click("#cancel-btn")
    page.wait_for_selector('#job-status[data-status="canceled"]', timeout=60_000)

    page.fill("#resume-steps", "1")  # fewer than done: the API's 422 shows by the input
    page.click("#resume-btn")
    page.wait_for_selector("#err-steps:not([hidden])")
    assert "greater than" in page.text_content("#err-steps")
    assert ui.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-btn")
    page.wait_for_url(stack.url + "/")
    assert ui.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_queued_job_says_why_it_waits(browser: Browser, stack: Stack, ui_key: str, ui):
    """The job page shows queued_reason (no live worker has the job's devices) from the
    stream; here the stream is the real job's JSON turned back into such a queued one."""
    page = sign_in(browser, stack, ui_key)
    job_id = ui.post("/v1/jobs", json={"name": "waits", "config": tiny(steps=4)}).json()["id"]
    job = stack.wait_status(job_id, {"succeeded"})
    reason = "it needs a worker with 4 devices and the live workers have at most 1"
    queued = {**job, "status": "queued", "queued_reason": reason, "finished_at": None}
    body = f"id: 1\nevent: job\ndata: {json.dumps(queued)}\n\n"
    page.route(
        "**/v1/jobs/*/events",
        lambda route, _: route.fulfill(headers={"Content-Type": "text/event-stream"}, body=body),
    )
    page.goto(f"{stack.url}/ui/jobs/{job_id}")
    page.wait_for_selector('#job-status[data-status="queued"]')
    assert page.text_content("#job-waiting") == f"waiting: {reason}"
    assert page.is_visible("#job-waiting")
    page.unroute("**/v1/jobs/*/events")


def test_a_succeeded_job_trains_longer_from_the_job_page(
    browser: Browser, stack: Stack, ui_key: str, ui: httpx.Client
):
    page = sign_in(browser, stack, ui_key)
    job_id = ui.post("/v1/jobs", json={"name": "longer", "config": tiny()}).json()["id"]
    assert stack.wait_status(job_id, {"succeeded", "failed"})["status"] == "succeeded"
    page.goto(f"{stack.url}/ui/jobs/{job_id}")
    page.wait_for_selector('#job-status[data-status="succeeded"]')
    # No steps given: nothing to do, and the hint says what would be
    assert page.is_disabled("#resume-btn")
    assert page.is_visible("#resume-hint")
    assert "above 24 steps" in page.text_content("#resume-hint")
    page.fill("#resume-steps", "24")  # not more than it has done
    assert page.is_disabled("#resume-btn")
    page.fill("#resume-steps", "36")
    assert page.is_enabled("#resume-btn")
    assert page.text_content("#resume-btn") == "Train longer"
    page.click("#resume-btn")
    page.wait_for_selector('#stat-step:text-is("36 / 36")', timeout=120_000)
    page.wait_for_selector('#job-status[data-status="succeeded"]')
    job = ui.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["step"] == 36, job
    steps = [c["step"] for c in ui.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]]
    assert steps == [36, 24, 12]


def test_the_key_never_leaks(browser: Browser, stack: Stack, ui_key: str):
    page = sign_in(browser, stack, ui_key)
    page.goto(stack.url + "/ui/jobs/job_nope")  # so the history has a job page either way
    page.wait_for_selector("#job-error:not([hidden])")
    rec = browser.recorder
    assert ui_key not in page.url
    assert not [u for u in rec.navigations if ui_key in u]
    assert not [u for _, u, _ in rec.requests if ui_key in u]
    assert page.evaluate("history.length") <= len(rec.navigations) + 1  # no pushState of its own
    for _, url, headers in rec.requests:  # the header goes to /v1 and nowhere else
        assert urlsplit(url).path.startswith("/v1/") == ("authorization" in headers), url
    assert browser.context.cookies() == []
    csp = [m for m in rec.console_errors if "Content Security Policy" in m]
    assert not csp and not rec.page_errors, (csp, rec.page_errors)

    browser.context.close()  # Chromium writes its history database on the way out
    history = browser.profile / "Default" / "History"
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as db:
        visited = [url for (url,) in db.execute("SELECT url FROM urls")]
    assert any("/ui/jobs/" in u for u in visited), visited  # the check can see visits
    assert not [u for u in visited if ui_key in u]

    log = stack.api.log.read_text(errors="replace")
    assert '"GET /v1/jobs' in log  # the access log is on ...
    assert ui_key not in log  # ... and never saw the key
