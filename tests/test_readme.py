"""The README tells the truth about settings and set-up."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [
        f"GANFORGE_{name.upper()}"
        for name in Settings.model_fields
        if f"GANFORGE_{name.upper()}" not in README
    ]
    assert not missing, f"settings missing from README: {missing}"


def test_documented_settings_exist():
    documented = set(re.findall(r"GANFORGE_([A-Z_]+)", README))
    known = {name.upper() for name in Settings.model_fields}
    # the client's and the remote CLI's (app.client), not the server's
    client = {"URL", "KEY"}
    assert documented - known <= client, documented - known


def test_two_setup_commands_are_the_scripts():
    block = README.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
    for cmd in commands:
        assert (Path(__file__).parents[1] / cmd).is_file()


def test_the_onnx_snippet_runs_without_torch(tmp_path):
    """The README's five lines, as written, on a real export, in a Python that cannot import
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

    block = README.split("and five lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
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
