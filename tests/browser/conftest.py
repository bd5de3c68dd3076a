"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real
embedded `ganforge serve` (one for the module; no Redis or Postgres)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download does not work here; these keep Debian's Chromium quiet
# and off the network (no sync, updates or QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# The samples (or translations) grid, drawn from the checkpoint named by one of its data-*.
SAMPLES_READY = """([field, value]) => {
  const img = document.getElementById("samples");
  return img.dataset.state === "ready" && img.dataset[field] === value
    && img.complete && img.naturalWidth > 0;
}"""


@dataclass
class Recorder:
    """What the browser did: every request (URL and headers), navigation and complaint."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("request", lambda r: self.requests.append((r.method, r.url, dict(r.headers))))
        page.on(
            "framenavigated",
            lambda f: self.navigations.append(f.url) if f.parent_frame is None else None,
        )
        page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))


@dataclass
class Browser:
    context: Any
    page: Any  # one tab for the module: the key lives in this tab's sessionStorage
    profile: Path
    recorder: Recorder
    shots: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("dashboard"), None)
    s.env["GANFORGE_SCORE_SAMPLES"] = "64"  # scoring on (best, FD), but cheap
    s.env["GANFORGE_PROGRESS_INTERVAL"] = "0.2"
    s.start_api()
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def ui_key(stack: Stack) -> str:
    """A key made with `ganforge keys create`: serve never prints it, so the log must not have it."""
    return stack.create_key("dashboard")


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"the dashboard tests need Debian's Chromium at {CHROMIUM} "
            "(apt-get install chromium); Playwright's own browser download is not used"
        )
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("browser")
    profile, shots = tmp / "profile", tmp / "screenshots"
    shots.mkdir()
    recorder = Recorder()
    with sync_playwright() as p:
        # A persistent profile, so the test can read Chromium's own history database.
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.set_default_timeout(20_000)
        page = context.pages[0] if context.pages else context.new_page()
        recorder.attach(page)
        try:
            yield Browser(context, page, profile, recorder, shots)
        finally:
            context.close()  # a no-op if a test closed it already


@pytest.fixture(scope="module")
def ui(stack: Stack, ui_key: str) -> Iterator[httpx.Client]:
    """The API as the dashboard's key sees it."""
    with httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {ui_key}"}, timeout=30
    ) as client:
        yield client


def sign_in(browser: Browser, stack: Stack, key: str):
    """The module's tab, on the jobs list with the key given (typed in if it was not yet)."""
    page = browser.page
    page.goto(stack.url + "/")
    page.wait_for_selector("#key-section:not([hidden]), #jobs-section:not([hidden])")
    if page.locator("#key-section").is_visible():
        page.fill("#key-input", key)
        page.click("#key-form button[type=submit]")
    page.wait_for_selector("#jobs-section", state="visible")
    return page
