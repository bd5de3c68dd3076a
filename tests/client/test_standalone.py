"""ganforge-client on its own, as a user of the HTTP API installs it: a fresh virtualenv with
only clients/python (`pip install`, its dependencies from the package index), where torch
cannot be imported, runs a job on a real server through the installed console script and
the installed Client, and fetches a PNG."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.client.conftest import ROOT
from tests.tiny import tiny

pytestmark = pytest.mark.integration

# Run by the venv's python: the Client as installed there waits and samples.
WAIT_AND_SAMPLE = """
import sys
import ganforge_client
from ganforge_client import Client

with Client() as gf:  # GANFORGE_URL / GANFORGE_KEY
    job = gf.wait(sys.argv[1], timeout=90)
    png = gf.samples(job.id, n=4, nrow=2, seed=1)
open(sys.argv[2], "wb").write(png)
print(ganforge_client.__file__, job.status, png.step)
"""


def test_the_client_installs_without_torch_and_runs_a_job(server, key, tmp_path):
    # A copy of the source: pip builds in the tree it is given, and the checkout stays clean.
    src = shutil.copytree(
        ROOT / "clients" / "python",
        tmp_path / "src",
        ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GANFORGE_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PIP_NO_CACHE_DIR"] = "1"  # nothing cached outside tmp
    py, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", str(src)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            env={**env, "GANFORGE_URL": server.url, "GANFORGE_KEY": key},
            cwd=tmp_path,  # not the checkout: only what the venv installed is importable
            capture_output=True,
            text=True,
            timeout=120,
        )

    no_torch = run(py, "-c", "import torch")
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    installed = run(py, "-m", "pip", "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"ganforge-client", "httpx", "pydantic", "tqdm"} <= names, names
    assert not names & {"torch", "ganforge", "fastapi", "sqlalchemy", "celery"}, names

    config = tmp_path / "job.json"
    config.write_text(json.dumps(tiny(steps=12)))
    cli = str(bin_dir / "ganforge-client")
    made = run(cli, "jobs", "create", "--config", str(config), "--name", "standalone", "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    job = json.loads(made.stdout)
    assert job["status"] == "queued" and job["name"] == "standalone"

    out = tmp_path / "samples.png"
    waited = run(py, "-c", WAIT_AND_SAMPLE, job["id"], str(out))
    assert waited.returncode == 0, waited.stdout + waited.stderr
    where, status, step = waited.stdout.split()
    assert where.startswith(str(venv)) and (status, step) == ("succeeded", "12")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(data)).size == (2 * 18 + 2, 2 * 18 + 2)

    shown = run(cli, "jobs", "watch", job["id"], "--json")  # finished: at once, exit 0
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded"
