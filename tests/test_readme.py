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
    # README-only variables that are not settings of the service
    assert documented - known <= set(), documented - known


def test_two_setup_commands_are_the_scripts():
    block = README.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
    for cmd in commands:
        assert (Path(__file__).parents[1] / cmd).is_file()
