"""Presets (gan_core.presets): each expands to exactly the fields docs/configuration.md lists
for it, explicit fields win, the stored config says both, and translation kinds take none."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from gan_core.config import TrainConfig
from gan_core.jobconfig import parse_config
from gan_core.presets import PRESETS, PresetName

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs" / "configuration.md"


def documented_presets() -> dict[str, dict[str, Any]]:
    """The table under "### Presets": each row's preset and its `field: value` pairs."""
    section = DOCS.read_text().split("\n### Presets\n", 1)[1].split("\n#", 1)[0]
    table: dict[str, dict[str, Any]] = {}
    for row in re.findall(r"^\| `([\w-]+)` \|(.*)$", section, flags=re.M):
        name, rest = row
        sets = rest.split("|", 1)[0]
        table[name] = {
            field: json.loads(value) for field, value in re.findall(r"`(\w+): ([^`]+)`", sets)
        }
    return table


def changed_fields(config: TrainConfig) -> dict[str, Any]:
    """The fields where a config differs from the defaults, but ``preset`` itself."""
    base = TrainConfig().model_dump(mode="json")
    return {
        k: v for k, v in config.model_dump(mode="json").items() if k != "preset" and v != base[k]
    }


def test_the_docs_list_every_preset_with_its_fields():
    assert set(get_args(PresetName)) == set(PRESETS)
    assert documented_presets() == PRESETS
    # and the README's short table offers the same names, linking the full list
    readme = (ROOT / "README.md").read_text().split("| preset | what it sets |", 1)[1]
    table = readme.split("\n\n", 1)[0]
    assert re.findall(r"^\| `([\w-]+)`", table, flags=re.M) == list(PRESETS)
    assert "](docs/configuration.md#presets)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_sets_exactly_its_documented_fields(name):
    config = TrainConfig(preset=name)
    assert config.preset == name
    # every field the docs name, with its value, and nothing else changed
    assert changed_fields(config) == documented_presets()[name]


def test_the_dcgan_preset_is_the_default():
    assert TrainConfig(preset="dcgan").model_dump() == {
        **TrainConfig().model_dump(),
        "preset": "dcgan",
    }


def test_explicit_fields_win_even_at_their_default():
    # reg_every 1 and arch dcgan are the defaults: still the request's, not the preset's
    config = TrainConfig(preset="resnet", reg_every=1, arch="dcgan")
    assert (config.reg_every, config.arch) == (1, "dcgan")
    assert (config.loss, config.r1_gamma, config.r2_gamma) == ("rpgan", 0.1, 0.1)
    small = TrainConfig(preset="resnet-small-data", augment_p=0.5, augment="translation")
    assert (small.augment_p, small.augment, small.arch) == (0.5, "translation", "resnet")
    # kind "noise" is the same config
    assert parse_config({"kind": "noise", "preset": "resnet", "r1_gamma": 1.0}).r1_gamma == 1.0


def test_a_stored_config_validates_to_itself():
    """What a job and its checkpoints store (preset and the expanded fields) is stable: a
    resume or a reload sees the same config, even where a field overrode the preset."""
    config = TrainConfig(preset="resnet-small-data", reg_every=2, g_width=16, d_width=16)
    again = TrainConfig.model_validate(json.loads(config.model_dump_json()))
    assert again == config and again.reg_every == 2


def test_a_preset_field_that_conflicts_is_that_fields_error():
    with pytest.raises(ValidationError, match="spectral_norm: not with arch resnet"):
        TrainConfig(preset="resnet", spectral_norm=True)


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(ValidationError) as err:
        TrainConfig(preset="stylegan")
    (e,) = err.value.errors()
    assert e["loc"] == ("preset",)
    assert all(repr(name) in e["msg"] for name in PRESETS), e["msg"]


@pytest.mark.parametrize("kind", ["paired", "unpaired"])
def test_translation_kinds_take_no_preset(kind):
    with pytest.raises(ValidationError) as err:
        parse_config({"kind": kind, "preset": "resnet"})
    (e,) = err.value.errors()
    assert e["loc"] == (kind, "preset") and e["type"] == "extra_forbidden"
