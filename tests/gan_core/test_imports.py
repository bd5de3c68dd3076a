"""gan_core is a plain library: importing it pulls in no service stack and touches no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MODULES = [
    "gan_core",
    "gan_core.config",
    "gan_core.data",
    "gan_core.nets",
    "gan_core.losses",
    "gan_core.augment",
    "gan_core.ema",
    "gan_core.training",
    "gan_core.checkpoint",
    "gan_core.sampling",
    "gan_core.metrics",
    "gan_core.cli",
    "gan_core.export",
    "gan_core.data.pairs",
    "gan_core.translation.nets",
    "gan_core.jobconfig",
    "gan_core.translation.run",
    "gan_core.translation.inference",
    "gan_core.metrics.translation",
    "gan_core.launch",
    "gan_core.sync_batchnorm",
]
FORBIDDEN = [
    "fastapi",
    "celery",
    "redis",
    "sqlalchemy",
    "starlette",
    "app",
    "worker",
    "uvicorn",
    "alembic",
    "kombu",
    "psycopg",
    "pydantic_settings",
]

SCRIPT = f"""
import importlib, json, sys

def report():
    import torch
    print(json.dumps({{
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r}),
        "cuda_initialized": torch.cuda.is_initialized(),
    }}))

for name in {MODULES!r}:
    importlib.import_module(name)
report()
import sqlalchemy  # control: the probe must see a forbidden module once one is loaded
report()
"""

REPO = Path(__file__).resolve().parents[2]


def test_engine_imports_no_service_modules_and_no_cuda():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    engine, control = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert engine["loaded"] == []
    assert engine["cuda_initialized"] is False
    assert "sqlalchemy" in control["loaded"]
