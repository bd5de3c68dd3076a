"""The README and docs/ tell the truth about settings, set-up and the ONNX snippet."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.settings import Settings

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
# the README with every docs/ page: what a reader can find by following its links
DOCS = "\n".join([README, *(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))])


def test_every_setting_is_documented():
    missing = [
        f"GANFORGE_{name.upper()}"
        for name in Settings.model_fields
        if f"GANFORGE_{name.upper()}" not in DOCS
    ]
    assert not missing, f"settings missing from README.md and docs/: {missing}"


def test_documented_settings_exist():
    documented = set(re.findall(r"GANFORGE_([A-Z_]+)", DOCS))
    known = {name.upper() for name in Settings.model_fields}
    # the client's and the remote CLI's (ganforge_client), not the server's
    client = {"URL", "KEY"}
    assert documented - known <= client, documented - known


def test_two_setup_commands_are_the_scripts():
    block = README.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
    for cmd in commands:
        assert (Path(__file__).parents[1] / cmd).is_file()


def test_the_readme_is_a_front_door():
    """Short, and one click from every page of docs/."""
    assert len(README.splitlines()) <= 200
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", README))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= linked, f"docs pages the README does not link: {pages - linked}"


def test_the_onnx_snippet_runs_without_torch(tmp_path):
    """The docs' five lines, as written, on a real export, in a Python that cannot import
    torch: the picture is the generator's image for that latent."""
    import subprocess
    import sys

    import numpy as np
    import torch
    from PIL import Image

    from gan_core.config import TrainConfig
    from gan_core.export import export_onnx
    from gan_core.nets import build_generator
    from gan_core.sampling import generate
    from tests.tiny import tiny

    assert DOCS.count("and five lines") == 1
    block = DOCS.split("and five lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 5
    G = build_generator(TrainConfig(**tiny(channels=1))).eval()
    export_onnx(G, tmp_path / "generator.onnx")
    no_torch = "import sys; sys.modules['torch'] = None; sys.modules['gan_core'] = None\n"
    run = subprocess.run(
        [sys.executable, "-c", no_torch + block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    z = np.random.default_rng(0).standard_normal((1, G.latent_dim), dtype=np.float32)
    want = ((generate(G, torch.from_numpy(z), None)[0, 0].numpy() + 1) * 127.5).round()
    got = np.asarray(Image.open(tmp_path / "one.png"), dtype=np.float64)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1
