"""POST /v1/datasets with zips of pairs (A/ + B/, AB/) and of two domains (trainA/ + trainB/):
what is recorded, every refusal as a 422 naming the file, the archive guards, and noise jobs
refusing them (translation jobs on them: tests/api/test_translation_jobs.py)."""

from __future__ import annotations

import json

import pytest

from tests.api.upload_helpers import (
    TINY,
    app_with,
    assert_nothing_left,
    assert_problem,
    make_zip,
    png,
    upload,
)


def pairs_zip(n=6, root="edges2photos/", a="A", b="B", size=(12, 10), extra=None) -> bytes:
    members = {}
    for i in range(n):
        members[f"{root}{a}/{i:03d}.png"] = png(size, "L", i)  # grey edges
        members[f"{root}{b}/{i:03d}.jpg"] = png(size, "RGB", (i, 100, 200))  # colour photos
    members["__MACOSX/._x"] = b"junk"  # skipped, as in image zips
    return make_zip({**members, **(extra or {})})


def test_paired_zip_is_recorded_with_its_domains_and_split(client, settings):
    r = upload(client, pairs_zip(), filename="edges.zip")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["kind"], ds["pairing"], ds["num_images"], ds["val_size"]) == (
        "paired",
        "paired",
        6,
        2,
    )
    assert (ds["channels"], ds["image_size"]) == (3, 10)  # B's
    assert ds["domains"] == {
        "A": {"num_images": 6, "channels": 1, "image_size": 10, "val_images": 2},
        "B": {"num_images": 6, "channels": 3, "image_size": 10, "val_images": 2},
    }
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    listed = [d for d in client.get("/v1/datasets").json()["items"] if d["id"] == ds["id"]]
    assert listed == [ds]
    folder = settings.resolved_store_dir / "datasets" / ds["id"]
    assert sorted(p.name for p in (folder / "pairs" / "A").iterdir())[0] == "000.png"
    split = json.loads((folder / "split.json").read_text())
    assert split["val"]["A"] == split["val"]["B"] and len(split["val"]["A"]) == 2
    # The split is fixed: the same pairs are held out on every upload of the same data.
    again = upload(client, pairs_zip(), filename="again.zip").json()
    again_split = settings.resolved_store_dir / "datasets" / again["id"] / "split.json"
    assert json.loads(again_split.read_text()) == split


def test_unpaired_trainA_trainB_of_different_counts(client):
    members = {f"h2z/trainA/horse_{i}.png": png((8, 8), "RGB", (i, 0, 0)) for i in range(4)}
    members |= {f"h2z/trainB/zebra_{i}.png": png((16, 16), "L", i) for i in range(60)}
    members["h2z/testA/horse_t.png"] = b"not even an image: the test split is skipped"
    r = upload(client, make_zip(members), filename="h2z.zip")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["kind"], ds["pairing"], ds["num_images"]) == ("unpaired", "unpaired", 64)
    assert ds["domains"]["A"] == {"num_images": 4, "channels": 3, "image_size": 8, "val_images": 2}
    assert ds["domains"]["B"] == {
        "num_images": 60,
        "channels": 1,
        "image_size": 16,
        "val_images": 3,
    }
    assert ds["val_size"] == 5


def test_overlapping_names_read_as_two_domains_when_asked(client):
    data = pairs_zip(extra={"edges2photos/B/999.png": png((12, 10))})
    body = assert_problem(upload(client, data), 422, "file", "B/999.png", "no partner")
    assert "pairing=unpaired" in body["detail"]
    r = client.post(
        "/v1/datasets",
        params={"pairing": "unpaired"},
        files={"file": ("x.zip", data, "application/zip")},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["domains"]["B"]["num_images"]) == ("unpaired", 7)


def test_ab_folder_is_split_in_the_middle(client, settings):
    members = {f"facades/AB/{i}.png": png((20, 10), "RGB", (i, 2 * i, 3 * i)) for i in range(5)}
    r = upload(client, make_zip(members), filename="facades.zip")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["kind"], ds["num_images"], ds["image_size"], ds["val_size"]) == ("paired", 5, 10, 2)
    assert ds["domains"]["A"]["channels"] == ds["domains"]["B"]["channels"] == 3


@pytest.mark.parametrize(
    ("members", "pairing", "words"),
    [
        (
            {"A/0.png": png(), "A/1.png": png(), "A/2.png": png(), "B/": b""},
            None,
            ["B", "no images"],
        ),
        (
            {**{f"A/{i}.png": png() for i in range(3)}, **{f"B/{i}.png": png() for i in range(2)}},
            None,
            ["A/2.png", "no partner"],
        ),
        (
            {**{f"A/{i}.png": png() for i in range(3)}, **{f"B/{i}.png": png() for i in range(3)}}
            | {"B/1.png": png((16, 12))},
            None,
            ["B/1.png", "16x12", "same size"],
        ),
        ({f"AB/{i}.png": png((16 + (i == 2), 8)) for i in range(3)}, None, ["AB/2.png", "width"]),
        (
            {
                **{f"A/a{i}.png": png() for i in range(3)},
                **{f"B/b{i}.png": png() for i in range(3)},
            },
            "paired",
            ["no partner"],
        ),
        (
            {"A/0.png": png(), "A/1.png": png(), "B/0.png": png(), "B/1.png": png()},
            None,
            ["at least 3"],
        ),
        ({"A/x/0.png": png(), "B/0.png": png()}, None, ["A/x/0.png", "nested"]),
        ({"A/0.png": png(), "A/0.jpg": png(), "B/0.png": png()}, None, ["A/0.png", "second"]),
        ({"A/0.png": png(), "B/0.txt": b"hi"}, None, ["B/0.txt", "not an image"]),
        ({"A/0.png": png(), "B/0.png": png(), "AB/0.png": png()}, None, ["more than one layout"]),
    ],
)
def test_pair_faults_are_422_naming_the_file(client, settings, members, pairing, words):
    params = {"pairing": pairing} if pairing else {}
    r = client.post(
        "/v1/datasets",
        params=params,
        files={"file": ("p.zip", make_zip(members), "application/zip")},
    )
    assert_problem(r, 422, "file", *words)
    assert_nothing_left(client, settings)


def test_pairing_is_checked(client, settings):
    r = client.post(
        "/v1/datasets",
        data={"pairing": "sideways"},
        files={"file": ("p.zip", pairs_zip(), "application/zip")},
    )
    assert_problem(r, 422, "pairing", "auto, paired, unpaired")
    images = make_zip({f"{i}.png": png() for i in range(3)})
    r = client.post(
        "/v1/datasets",
        data={"pairing": "paired"},
        files={"file": ("p.zip", images, "application/zip")},
    )
    assert_problem(r, 422, "pairing", "A/ and B/")
    assert_nothing_left(client, settings)


@pytest.mark.parametrize("evil", ["edges2photos/A/../../evil.png", "/tmp/evil.png"])
def test_zip_slip_in_a_paired_zip(client, settings, evil):
    assert_problem(upload(client, pairs_zip(extra={evil: png()})), 422, "file", evil)
    assert_nothing_left(client, settings)


def test_bombs_in_a_paired_zip(client, settings):
    bomb = pairs_zip(extra={"edges2photos/B/bomb.png": b"\0" * (8 << 20)})
    assert_problem(upload(client, bomb), 422, "file", "bomb.png", "zip bomb")
    from tests.hostile import png as blank

    huge = pairs_zip(extra={"edges2photos/A/999.png": blank(5000), "edges2photos/B/999.png": png()})
    assert_problem(upload(client, huge), 422, "file", "999.png", "over the limit")
    assert_nothing_left(client, settings)


def test_pixel_budget_and_entry_count_apply_to_pairs(tmp_path):
    with app_with(tmp_path, max_upload_pixels=10 * 12 * 10, max_upload_entries=20) as (c, s):
        assert_problem(upload(c, pairs_zip(n=6)), 413, "file", "pixels")
        assert_problem(upload(c, pairs_zip(n=12)), 422, "file", "entries")
        assert_nothing_left(c, s)


def test_builtin_pairs_listed_and_noise_jobs_refuse_pairs(client):
    items = {d["id"]: d for d in client.get("/v1/datasets").json()["items"]}
    edges = items["shapes-edges"]
    assert edges["builtin"] and edges["available"] and edges["pairing"] == "paired"
    assert edges["domains"]["A"]["channels"] == 1 and edges["domains"]["B"]["channels"] == 3
    assert edges["val_size"] == edges["domains"]["A"]["val_images"] == 200
    assert items["shapes"]["pairing"] is None
    uploaded = upload(client, pairs_zip()).json()
    for name, words in (("shapes-edges", "pairs"), (uploaded["id"], "pairs")):
        r = client.post("/v1/jobs", json={"config": {**TINY, "dataset": name}})
        assert_problem(r, 422, "config.dataset", name, words, "kind 'paired'", "noise-to-image")
    assert client.get("/v1/jobs").json()["items"] == []
