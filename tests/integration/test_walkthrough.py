"""The README's walkthrough, pasted into bash as written, against `ganforge serve` with no
settings: it trains the demo job and leaves a samples.png of the grid it promises.

What the test changes in the text, and nothing else:
- `http://127.0.0.1:8000` becomes this server's address (a free port);
- the demo's `"steps": 2000, "checkpoint_every": 250` become 8 and 4, so it trains in seconds;
- the wait loop's `sleep 5` becomes `sleep 0.5`;
- the script runs under `set -euo pipefail`, so a failing line fails the test.
The server runs with GANFORGE_SCORE_SAMPLES=0 (no scorer to train first) and the suite's
checkpoint limits (tests/tiny.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.settings import Settings
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

README = (Path(__file__).parents[2] / "README.md").read_text()


def walkthrough_blocks() -> list[str]:
    section = README.split("\n## Walkthrough with curl\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)


def _substitute(script: str, url: str) -> str:
    for old, new in [
        ("http://127.0.0.1:8000", url),
        ('"steps": 2000,', '"steps": 8,'),
        ('"checkpoint_every": 250', '"checkpoint_every": 4'),
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
