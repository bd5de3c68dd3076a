"""The README's walkthroughs, pasted into bash as written, against `ganforge serve` with no
settings: the first trains the demo job and leaves a samples.png of the grid it promises;
the pix2pix one trains a translator and leaves translations.png and translated.png.

What the test changes in the text, and nothing else:
- `http://127.0.0.1:8000` becomes this server's address (a free port);
- the demo's `"steps": 2000, "checkpoint_every": 250` become 8 and 4, so it trains in seconds;
- the wait loop's `sleep 5` becomes `sleep 0.5`;
- the script runs under `set -euo pipefail`, so a failing line fails the test.
In the pix2pix walkthrough `"steps": 1000, "checkpoint_every": 250` become 6 and 3, and
`.venv/bin/python` (the server's Python, which the README's reader has) becomes this
test's interpreter. The server runs with GANFORGE_SCORE_SAMPLES=0 (no scorer to train first) and the suite's
checkpoint limits (tests/tiny.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.settings import Settings
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

README = (Path(__file__).parents[2] / "README.md").read_text()


def walkthrough_blocks(heading: str = "Walkthrough with curl") -> list[str]:
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)


def _substitute(script: str, url: str, changes: tuple[tuple[str, str], ...] = ()) -> str:
    for old, new in [
        ("http://127.0.0.1:8000", url),
        *(
            changes
            or (
                ('"steps": 2000,', '"steps": 8,'),
                ('"checkpoint_every": 250', '"checkpoint_every": 4'),
            )
        ),
        ("sleep 5", "sleep 0.5"),
    ]:
        assert old in script, f"the walkthrough no longer says {old!r}: update this test"
        script = script.replace(old, new)
    return script


def test_the_walkthrough_runs_as_pasted(tmp_path):
    blocks = walkthrough_blocks()
    assert len(blocks) == 4  # the key, the POST, the wait, the PNG
    assert "samples.png" in blocks[-1]
    stack = Stack(tmp_path, None)
    stack.env["GANFORGE_SCORE_SAMPLES"] = "0"
    if "min_checkpoint_every" in Settings.model_fields:  # a floor on checkpoint_every
        stack.env["GANFORGE_MIN_CHECKPOINT_EVERY"] = "1"
    stack.start_api()  # in tmp_path, which is where the walkthrough's shell runs too
    try:
        stack.wait_ready()
        script = _substitute("\n".join(blocks), stack.url)
        run = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=tmp_path,
            env={k: v for k, v in stack.env.items() if not k.startswith("GANFORGE_")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{stack.logs()}"
        job_id, status = run.stdout.split()
        assert job_id.startswith("job_") and status == "succeeded", run.stdout + run.stderr
        assert "8 / 8 steps" in run.stderr  # the loop showed the progress
    finally:
        stack.stop()
    png = Image.open(tmp_path / "samples.png")
    assert png.format == "PNG"
    assert png.size == (274, 274)  # as the README says: 8 x 8 images of 32 px, 2 px apart
    pixels = np.asarray(png, dtype=np.float64)
    assert pixels[2:34, 2:34].std() > 0  # a picture, not a blank


def _run(stack: Stack, tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path,
        env={k: v for k, v in stack.env.items() if not k.startswith("GANFORGE_")},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_pix2pix_walkthrough_runs_as_pasted(tmp_path):
    key, _, wait, _ = walkthrough_blocks()
    train, pictures = walkthrough_blocks("Translate images: a pix2pix walkthrough")
    assert '"kind": "paired"' in train and "translate" in pictures
    stack = Stack(tmp_path, None)
    stack.env["GANFORGE_SCORE_SAMPLES"] = "0"
    stack.env["GANFORGE_MIN_CHECKPOINT_EVERY"] = "1"
    stack.start_api()
    try:
        stack.wait_ready()
        changes = (
            ('"steps": 1000,', '"steps": 6,'),
            ('"checkpoint_every": 250', '"checkpoint_every": 3'),
            (".venv/bin/python", sys.executable),
        )
        script = _substitute("\n".join([key, train, wait, pictures]), stack.url, changes)
        run = _run(stack, tmp_path, script)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{stack.logs()}"
        assert run.stdout.split()[-1] == "succeeded", run.stdout + run.stderr
        assert "6 / 6 steps" in run.stderr
    finally:
        stack.stop()
    out = Image.open(tmp_path / "translated.png")
    assert (out.format, out.size, out.mode) == ("PNG", (32, 32), "RGB")  # as the README says
    grid = Image.open(tmp_path / "translations.png")
    assert grid.size == (3 * 34 + 2, 8 * 34 + 2)  # 8 rows of input | output | target
    assert np.asarray(Image.open(tmp_path / "edges.png")).max() == 255  # the drawn edge map
