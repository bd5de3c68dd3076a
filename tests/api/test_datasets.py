"""POST /v1/datasets: uploads of image zips and npz files that work, listing and deleting them,
and training on them. The refusals are in test_upload_refusals.py."""

from __future__ import annotations

import numpy as np

from tests.api.upload_helpers import (
    TINY,
    app_with,
    assert_problem,
    labelled_zip,
    make_npz,
    make_zip,
    png,
    scratch_entries,
    store_entries,
    upload,
    upload_raw,
)

# --------------------------------------------------------------------------- happy paths


def test_npz_without_labels(client, settings):
    x = np.random.default_rng(0).integers(0, 255, (10, 16, 16), dtype=np.uint8)
    r = upload(client, make_npz(x=x), filename="digits.npz", ctype="application/octet-stream")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert ds["id"].startswith("ds_") and ds["name"] == "digits"
    assert (ds["kind"], ds["num_images"], ds["channels"], ds["image_size"]) == ("npz", 10, 1, 16)
    assert ds["num_classes"] is None and ds["builtin"] is False
    path = settings.resolved_store_dir / "datasets" / ds["id"] / "data.npz"
    assert path.is_file() and ds["size_bytes"] == path.stat().st_size
    assert scratch_entries(settings) == []


def test_npz_with_labels_as_raw_body(client):
    x = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    # No filename: an npz is still recognised by its x.npy member.
    r = upload_raw(client, make_npz(x=x, y=y), name="rgb")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["kind"], ds["channels"], ds["image_size"], ds["num_classes"]) == (
        "rgb",
        "npz",
        3,
        8,
        3,
    )


def test_zip_with_class_folders(client, settings):
    r = upload(client, labelled_zip(), filename="pets.zip", name="my pets")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["name"] == "my pets" and ds["kind"] == "image-folder"
    assert ds["num_images"] == 16 and ds["channels"] == 3
    assert ds["num_classes"] == 2 and ds["class_names"] == ["cats", "dogs"]
    assert ds["image_size"] == 20  # the first image's centre square (20x24 -> 20)
    images = settings.resolved_store_dir / "datasets" / ds["id"] / "images"
    assert sorted(p.name for p in images.iterdir()) == ["cats", "dogs"]  # root folder stripped
    assert not list(images.rglob(".*")) and not list(images.rglob("Thumbs.db"))


def test_zip_of_loose_images_as_raw_body(client):
    data = make_zip({f"img{i}.png": png((16, 16), "L", i * 20) for i in range(5)})
    r = upload_raw(client, data, ctype="application/zip")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["kind"], ds["num_images"], ds["channels"], ds["num_classes"]) == (
        "upload",
        "image-folder",
        5,
        1,
        None,
    )


def test_list_get_delete(client, settings):
    a = upload(client, make_npz(x=np.zeros((4, 8, 8), np.uint8)), filename="a.npz").json()
    b = upload(client, labelled_zip(per_class=2), filename="b.zip").json()
    items = client.get("/v1/datasets").json()["items"]
    assert [d["id"] for d in items if not d["builtin"]] == [b["id"], a["id"]]  # newest first
    got = client.get(f"/v1/datasets/{a['id']}")
    assert got.status_code == 200 and got.json()["name"] == "a"
    r = client.delete(f"/v1/datasets/{a['id']}")
    assert r.status_code == 204
    assert not (settings.resolved_store_dir / "datasets" / a["id"]).exists()
    assert_problem(client.get(f"/v1/datasets/{a['id']}"), 404, None)
    assert store_entries(settings, "datasets") == [b["id"]]


def test_delete_while_a_queued_job_uses_it(client, settings):
    ds = upload(client, make_npz(x=np.zeros((8, 16, 16), np.uint8)), filename="a.npz").json()
    r = client.post("/v1/jobs", json={"config": {**TINY, "dataset": ds["id"]}})
    assert r.status_code == 202, r.text
    assert_problem(client.delete(f"/v1/datasets/{ds['id']}"), 409, None)
    assert (settings.resolved_store_dir / "datasets" / ds["id"] / "data.npz").is_file()


def job_racing_dataset_delete(client, settings, monkeypatch) -> None:
    """POST /v1/jobs while DELETE /v1/datasets/{id} commits between the dataset check and the
    insert: a 409 on config.dataset, nothing left behind (it was a 500: the conflict handler
    took every IntegrityError for an idempotency race)."""
    from app.core.datasets import records as core_datasets
    from app.core.db import session_scope
    from app.core.models import Dataset

    ds = upload(client, make_npz(x=np.zeros((8, 16, 16), np.uint8)), filename="a.npz").json()["id"]
    check = core_datasets.check_training_dataset

    def racing(*args, **kwargs):
        result = check(*args, **kwargs)
        with session_scope(settings.resolved_database_url) as other:  # the other request's DELETE
            other.delete(other.get(Dataset, ds))
        return result

    monkeypatch.setattr(core_datasets, "check_training_dataset", racing)
    r = client.post("/v1/jobs", json={"config": {**TINY, "dataset": ds}})
    assert_problem(r, 409, "config.dataset")
    assert "deleted" in r.json()["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_job_racing_the_delete_of_its_dataset_is_a_409(client, settings, monkeypatch):
    job_racing_dataset_delete(client, settings, monkeypatch)


def test_jobs_train_on_uploads(client, run_job):
    x = np.random.default_rng(1).integers(0, 255, (64, 16, 16), dtype=np.uint8)
    npz = upload(client, make_npz(x=x), filename="noise.npz").json()
    pets = upload(client, labelled_zip(per_class=8), filename="pets.zip").json()
    for ds, conditional in ((npz, False), (pets, True)):
        r = client.post(
            "/v1/jobs",
            json={
                "name": ds["name"],
                "config": {**TINY, "dataset": ds["id"], "conditional": conditional},
            },
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert run_job(job_id) == "succeeded", client.get(f"/v1/jobs/{job_id}").json()["error"]
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["dataset_id"] == ds["id"] and job["progress"]["step"] == 4


def test_scratch_left_by_a_dead_process_is_removed_at_start(tmp_path):
    """An upload interrupted by a crash leaves its scratch file; the next start removes it,
    while the scratch area of a live process (another API replica) is kept."""
    import fcntl

    tmp = tmp_path / "store" / "tmp"
    (tmp / "dead-1").mkdir(parents=True)
    (tmp / "dead-1" / "upload.bin").write_bytes(b"x" * 1000)
    (tmp / "dead-1.lock").touch()  # nobody holds it: its process is gone
    (tmp / "0123abcd").mkdir()  # an older release's scratch directory, no lock at all
    (tmp / "live-2").mkdir()
    live = open(tmp / "live-2.lock", "a")  # noqa: SIM115 - a live replica's lock
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        with app_with(tmp_path):
            left = sorted(p.name for p in tmp.iterdir())
            assert "dead-1" not in left and "dead-1.lock" not in left and "0123abcd" not in left
            assert "live-2" in left and "live-2.lock" in left
            assert len([p for p in left if p.endswith(".lock")]) == 2  # the live one and ours
        assert sorted(p.name for p in tmp.iterdir()) == ["live-2", "live-2.lock"]  # ours is gone
    finally:
        live.close()
