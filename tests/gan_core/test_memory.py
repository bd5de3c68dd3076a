"""The training-memory estimate: built on the meta device, and near what training really takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gan_core.config import TrainConfig
from gan_core.memory import estimate_training_memory


def test_the_estimate_scales_with_batch_and_image_size():
    small = estimate_training_memory(TrainConfig(batch_size=32))
    double = estimate_training_memory(TrainConfig(batch_size=64))
    assert double.weight_bytes == small.weight_bytes
    assert abs(double.activation_bytes - 2 * small.activation_bytes) <= 8
    assert estimate_training_memory(TrainConfig(image_size=64)).total_bytes > double.total_bytes
    absurd = estimate_training_memory(
        TrainConfig(image_size=256, g_width=1024, d_width=1024, batch_size=4096)
    )
    assert absurd.total_bytes > 1 << 40  # over a terabyte: refused before any worker tries
    assert "GiB" in absurd.describe()


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# Run in a fresh interpreter: memory that earlier tests in this process freed would be reused
# without raising the peak (under ./scripts/test's two processes that hid most of this run's).
MEASURE = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.memory import estimate_training_memory
from gan_core.training import train
from tests.gan_core.test_memory import _peak_rss_bytes

config = TrainConfig(**json.loads(sys.argv[1]))
data = load_dataset("shapes", image_size=config.image_size, max_items=256)
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = _peak_rss_bytes()
result = train(config, sys.argv[2], dataset=data)
print(json.dumps([_peak_rss_bytes() - before, estimate_training_memory(result.config).total_bytes]))
"""


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_the_estimate_is_near_what_training_takes(tmp_path, precision):
    # widths 32: the estimate matched within 5% here (443 vs 424 MiB) at half the time of 64;
    # auto is bf16 on a CPU with native bf16 (smaller activations) and fp32 elsewhere
    config = {
        "image_size": 64,
        "batch_size": 32,
        "steps": 2,
        "checkpoint_every": 100,
        "device": "cpu",
        "g_width": 32,
        "d_width": 32,
        "precision": precision,
    }
    used, estimate = measure_fresh(MEASURE, config, tmp_path / "run")
    assert estimate / 4 < used < estimate * 2, (used >> 20, estimate >> 20)


def measure_fresh(script: str, config: dict, run_dir: Path) -> tuple[int, int]:
    """(peak RSS a run took, its estimate) as ``script`` prints them, run in a new interpreter
    from the repository root with the config as JSON and the run's folder."""
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config), str(run_dir)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    used, estimate = json.loads(proc.stdout.strip().splitlines()[-1])
    return used, estimate
