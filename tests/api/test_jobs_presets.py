"""POST /v1/jobs with a preset: the job stores the preset and the fields it expanded to, trains
and trains on; an unknown or misplaced preset is a 422 naming config.preset; the new-job form
offers the presets first."""

from __future__ import annotations

import json
import re

from app.core.artifacts.selection import get_store
from gan_core.presets import PRESETS
from tests.tiny import tiny

# tiny sizes; the preset brings the rest (arch, loss, penalties)
PRESET_JOB = tiny(preset="resnet", steps=4, checkpoint_every=2)


def _problem(r, field: str) -> dict:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["field"] == field, body
    return body


def test_a_preset_job_shows_its_preset_and_fields_trains_and_trains_on(client, run_job, settings):
    r = client.post("/v1/jobs", json={"name": "preset", "config": PRESET_JOB})
    assert r.status_code == 202, r.text
    job = r.json()
    expanded = PRESETS["resnet"]
    assert expanded  # the preset sets something to look for
    assert job["config"]["preset"] == "resnet"
    assert {k: job["config"][k] for k in expanded} == expanded
    assert job["config"]["g_width"] == PRESET_JOB["g_width"]  # the request's own fields stay

    assert run_job(job["id"]) == "succeeded"
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["config"]["preset"] == "resnet" and done["progress"]["step"] == 4
    assert {k: done["config"][k] for k in expanded} == expanded
    # every checkpoint says the same: the preset and what it set
    run = get_store(settings.resolved_store_dir, settings.store_url).run_dir(job["id"])
    metas = [json.loads(p.read_text()) for p in sorted(run.glob("checkpoints/*/meta.json"))]
    assert metas
    for meta in metas:
        assert meta["config"]["preset"] == "resnet"
        assert {k: meta["config"][k] for k in expanded} == expanded

    # trained longer: the resume checks the stored config against the checkpoint's, and the
    # preset expands to nothing new over it
    r = client.post(f"/v1/jobs/{job['id']}/resume", json={"steps": 6})
    assert r.status_code == 202, r.text
    assert run_job(job["id"]) == "succeeded"
    longer = client.get(f"/v1/jobs/{job['id']}").json()
    assert longer["progress"]["step"] == 6 and longer["config"]["preset"] == "resnet"


def test_an_explicit_field_wins_over_the_preset(client):
    config = PRESET_JOB | {"preset": "resnet-small-data", "reg_every": 1, "augment_p": 0.5}
    r = client.post("/v1/jobs", json={"name": "mine", "config": config})
    assert r.status_code == 202, r.text
    got = r.json()["config"]
    assert (got["reg_every"], got["augment_p"]) == (1, 0.5)
    assert (got["arch"], got["augment"]) == ("resnet", PRESETS["resnet-small-data"]["augment"])


def test_an_unknown_preset_is_422_naming_config_preset_and_the_choices(client):
    body = _problem(
        client.post("/v1/jobs", json={"name": "t", "config": tiny(preset="stylegan3")}),
        "config.preset",
    )
    assert all(repr(name) in body["detail"] for name in PRESETS), body


def test_a_field_against_the_preset_is_that_fields_422(client):
    config = tiny(preset="resnet", spectral_norm=True)
    body = _problem(
        client.post("/v1/jobs", json={"name": "t", "config": config}), "config.spectral_norm"
    )
    assert "arch resnet" in body["detail"], body


def test_a_translation_job_takes_no_preset(client):
    config = {"kind": "paired", "preset": "resnet"}
    body = _problem(client.post("/v1/jobs", json={"name": "t", "config": config}), "config.preset")
    assert "paired" in body["detail"], body


def test_the_new_job_form_offers_the_presets_first(client):
    form = client.get("/ui/new").text
    noise = form.split('data-kind-fields="noise"', 1)[1].split('data-kind-fields="paired"')[0]
    first = re.search(r'<fieldset><legend>([^<]+)</legend>.*?data-field-box="(\w+)"', noise)
    assert first and first.group(2) == "preset", first and first.groups()
    select = noise.split('id="f-preset"', 1)[1].split("</select>", 1)[0]
    offered = re.findall(r'<option value="([^"]*)"', select)
    assert offered == ["", *PRESETS]  # empty: no preset
    assert 'id="f-paired-preset"' not in form
    # resnet's shape fields sit with the other model fields
    model = noise.split("<legend>Model</legend>", 1)[1].split("</fieldset>", 1)[0]
    for name in ("arch", "blocks_per_stage", "group_size", "expansion"):
        assert f'data-field-box="{name}"' in model, name
