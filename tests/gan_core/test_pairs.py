"""gan_core.data.pairs: folders of A/ + B/, trainA/ + trainB/ and AB/, the split, shapes-edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core.data import BUILTINS, DatasetError, dataset_availability, load_dataset
from gan_core.data.pairs import (
    PAIR_BUILTINS,
    load_pair_folder,
    load_pairs,
    make_shapes_edges,
    validation_names,
)


def save(path: Path, size=(8, 8), mode="RGB", seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)


def test_paired_folder_gray_a_rgb_b(tmp_path):
    for i in range(6):
        save(tmp_path / "A" / f"{i}.png", mode="L", seed=i)
        save(tmp_path / "B" / f"{i}.jpg", seed=10 + i)
    ds = load_pair_folder(tmp_path, 4)
    assert ds.paired and ds.pairing == "paired" and len(ds) == 6
    assert ds.a.images.shape == (6, 1, 4, 4) and ds.b.images.shape == (6, 3, 4, 4)
    assert ds.a.images.dtype == torch.uint8 and ds.a.names == ds.b.names == tuple("012345")
    assert ds.a.val_names == ds.b.val_names and len(ds.a.val_names) == 2  # at least 2
    train, val = ds.a.split()
    assert len(train) == 4 and len(val) == 2
    assert ds.a.side == ds.b.side == 8


def test_unpaired_trainA_trainB_any_counts(tmp_path):
    for i in range(5):
        save(tmp_path / "trainA" / f"horse_{i}.png", seed=i)
    for i in range(9):
        save(tmp_path / "trainB" / f"zebra_{i}.png", size=(12, 10), mode="L", seed=i)
    save(tmp_path / "testA" / "ignored.png")
    ds = load_pair_folder(tmp_path, 4)
    assert not ds.paired and (len(ds.a), len(ds.b), len(ds)) == (5, 9, 14)
    assert (ds.a.channels, ds.b.channels, ds.b.side) == (3, 1, 10)
    assert all(n.startswith("zebra") for n in ds.b.val_names) and len(ds.b.val_names) == 2


def test_ab_folder_is_split_in_the_middle(tmp_path):
    for i in range(4):
        left = np.full((6, 6, 3), 10 * i, np.uint8)
        right = np.full((6, 6, 3), 200, np.uint8)
        Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / f"{i}.png")
    (tmp_path / "AB").mkdir()
    for p in tmp_path.glob("*.png"):
        p.rename(tmp_path / "AB" / p.name)
    ds = load_pair_folder(tmp_path, 6)
    assert ds.paired and ds.a.images.shape == (4, 1, 6, 6)  # grey pixels: one channel
    assert ds.a.images[3].unique().tolist() == [30] and ds.b.images.unique().tolist() == [200]


def test_validation_split_is_deterministic_seeded_and_by_name():
    names = [f"{i:03d}" for i in range(100)]
    first = validation_names(names, 0, "x")
    assert len(first) == 5 and first == validation_names(list(reversed(names)), 0, "x")
    assert first != validation_names(names, 1, "x")
    with pytest.raises(DatasetError, match="at least 3"):
        validation_names(["a", "b"], 0, "somewhere")


def test_refusals_name_the_file(tmp_path):
    for i in range(4):
        save(tmp_path / "A" / f"{i}.png")
        save(tmp_path / "B" / f"{i}.png")
    save(tmp_path / "A" / "extra.png")
    with pytest.raises(DatasetError, match=r"A/extra\.png: no partner named 'extra'.* in B/"):
        load_pair_folder(tmp_path, 4)
    assert not load_pair_folder(tmp_path, 4, pairing="unpaired").paired
    (tmp_path / "A" / "extra.png").unlink()
    save(tmp_path / "B" / "2.png", size=(8, 10))
    with pytest.raises(DatasetError, match=r"B/2\.png: 8x10 pixels, but its partner .*A/2\.png"):
        load_pair_folder(tmp_path, 4)
    for p in (tmp_path / "B").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"/B: no images"):
        load_pair_folder(tmp_path, 4)
    (tmp_path / "B").rmdir()
    with pytest.raises(DatasetError, match=r"/B: no images \(no such folder"):
        load_pair_folder(tmp_path, 4)
    odd = tmp_path / "odd"
    for i in range(3):
        save(odd / "AB" / f"{i}.png", size=(16, 8))
    save(odd / "AB" / "bad.png", size=(15, 8))
    with pytest.raises(DatasetError, match=r"AB/bad\.png: 15 pixels wide"):
        load_pair_folder(odd, 4)


def test_shapes_edges_builtin_offline():
    assert BUILTINS["shapes-edges"].pairing == "paired" and "shapes-edges" in PAIR_BUILTINS
    assert dataset_availability("shapes-edges") == (True, "generated procedurally")
    ds = load_pairs("shapes-edges", image_size=16, max_items=40, seed=3)
    assert ds.paired and ds.a.images.shape == (40, 1, 16, 16) and ds.b.channels == 3
    assert len(ds.a.val_names) == 2
    again = make_shapes_edges(40, 16, 3)
    assert torch.equal(ds.a.images, again.a.images) and torch.equal(ds.b.images, again.b.images)
    # Edges: bright on the outline, dark inside the shape and in the background.
    assert ds.a.images.amax() == 255 and (ds.a.images < 30).float().mean() > 0.5
    with pytest.raises(DatasetError, match="load_pairs"):
        load_dataset("shapes-edges", image_size=16)
