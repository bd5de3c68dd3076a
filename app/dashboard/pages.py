"""The dashboard's pages and static files: plain HTML with no data in it.

The pages need no key: everything they show, their scripts fetch from /v1 with the key the
user pasted (kept in sessionStorage, sent only as a header), so the dashboard can never
see more than that key may.
"""

from __future__ import annotations

import os
from functools import cache
from html import escape
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from app.dashboard.forms import config_fields

HERE = Path(__file__).parent
STATIC_PREFIX = "/ui/static"

CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # The pages are the same for everyone, but a new release should reach the tab at once.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@cache
def _template(name: str) -> Template:
    return Template((HERE / "templates" / name).read_text(encoding="utf-8"))


def _page(title: str, script: str, main: str, main_attrs: str = "") -> HTMLResponse:
    html = _template("base.html").substitute(
        title=escape(title), script=script, main=main, main_attrs=main_attrs
    )
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    """The key form, or the jobs list once this tab has a key."""
    return _page("Jobs", "index.js", _template("index.html").template)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str) -> HTMLResponse:
    """One job: live progress, samples, checkpoints, charts and actions."""
    # The id is only echoed for the script; whether the job exists (for this key) is /v1's call.
    return _page(
        "Job", "job.js", _template("job.html").template, f' data-job-id="{escape(job_id)}"'
    )


@router.get("/ui/new", response_class=HTMLResponse)
def new_job_page() -> HTMLResponse:
    """The new-job form (fields from TrainConfig) and the dataset upload form."""
    return _page("New job", "new.js", _new_main())


@cache
def _new_main() -> str:
    return _template("new.html").substitute(fields=config_fields())


class DashboardStatic(StaticFiles):
    """StaticFiles with the dashboard's security headers (nosniff matters for scripts)."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


router.mount(STATIC_PREFIX, DashboardStatic(directory=HERE / "static"), name="dashboard-static")
