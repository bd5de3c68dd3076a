"""POST /v1/jobs with arch resnet: a job trains and samples; its fields are refused by name."""

from __future__ import annotations

from tests.tiny import tiny

RESNET = tiny(arch="resnet", loss="rpgan", r1_gamma=1.0, r2_gamma=1.0, steps=4, checkpoint_every=4)


def test_a_resnet_job_trains_and_samples(client, run_job):
    config = RESNET | {"blocks_per_stage": 2, "group_size": 8}
    r = client.post("/v1/jobs", json={"name": "resnet", "config": config})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["config"]["arch"] == "resnet" and job["config"]["blocks_per_stage"] == 2
    assert job["config"]["expansion"] is None  # the default, resolved by the nets

    assert run_job(job["id"]) == "succeeded"
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["progress"]["step"] == 4
    png = client.get(f"/v1/jobs/{job['id']}/checkpoints/latest/samples.png?n=4&seed=1")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_resnet_fields_are_422_naming_the_field(client):
    cases = {
        "config.blocks_per_stage": {"arch": "dcgan", "blocks_per_stage": 2},
        "config.group_size": {"group_size": 32},  # g_width 8 x expansion 2 = 16 channels
        "config.expansion": {"expansion": 0},
        "config.spectral_norm": {"spectral_norm": True},
        "config.image_size": {"image_size": 100},
        "config.arch": {"arch": "resnet50"},
    }
    for field, override in cases.items():
        r = client.post("/v1/jobs", json={"name": "t", "config": RESNET | override})
        assert r.status_code == 422, (field, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["field"] == field, (field, body)
        assert field.split(".")[-1] in body["detail"], body
