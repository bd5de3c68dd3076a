"""The building blocks of a translator's pictures, without a server: a grid's layout
(rows_png) and the held-out examples it shows (validation_examples), which must be exactly
what training holds out. The endpoints that use them: tests/api/test_translate.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

SIZE = 32  # the U-Net's smallest side


def test_a_grid_is_one_image_per_row_and_column():
    from app.core.serving.translating import rows_png

    grey = torch.full((2, 1, 4, 4), 7, dtype=torch.uint8)
    colour = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    colour[:, 0] = 200
    img = Image.open(io.BytesIO(rows_png([grey, colour])))
    assert img.size == (2 * 6 + 2, 2 * 6 + 2) and img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr[2:6, 2:6] == 7).all() and (arr[8:12, 8:12] == [200, 0, 0]).all()
    assert (arr[0:2] == 0).all() and (arr[:, 6:8] == 0).all()  # the gaps


@pytest.mark.parametrize("layout", ["A/B", "AB", "trainA/trainB"])
def test_held_out_examples_decode_only_the_split_and_match_the_training_data(tmp_path, layout):
    """validation_examples reads only the held-out files of an upload, and gives exactly what
    load_job_pairs (the whole dataset, as training loads it) holds out."""
    from app.core.artifacts.store import LocalStore
    from app.core.datasets.job_data import load_job_pairs
    from app.core.models import Dataset
    from app.core.serving.translating import validation_examples
    from gan_core.translation.config import PairedConfig, UnpairedConfig

    root = tmp_path / "store" / "datasets" / "ds_x" / "pairs"
    rng = np.random.default_rng(0)
    for i in range(45):  # 5% of 45 is 2: two held out (of each domain when unpaired)
        edges = rng.integers(0, 256, (24, 30), dtype=np.uint8)
        photo = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        if layout == "AB":
            (root / "AB").mkdir(parents=True, exist_ok=True)
            side = np.concatenate([np.repeat(edges[..., None], 3, 2), photo], axis=1)
            Image.fromarray(side).save(root / "AB" / f"{i:03d}.png")
        else:
            a, b = layout.split("/")
            (root / a).mkdir(parents=True, exist_ok=True)
            (root / b).mkdir(parents=True, exist_ok=True)
            stem_b = f"{i:03d}" if layout == "A/B" else f"z{i:03d}"
            Image.fromarray(edges).save(root / a / f"{i:03d}.png")
            Image.fromarray(photo).save(root / b / f"{stem_b}.jpg", quality=95)
    kind = "unpaired" if layout == "trainA/trainB" else "paired"
    upload = Dataset(id="ds_x", kind=kind, path="datasets/ds_x/pairs")
    cls = UnpairedConfig if kind == "unpaired" else PairedConfig
    config = cls(dataset="ds_x", image_size=SIZE)
    store = LocalStore(tmp_path / "store")
    full = load_job_pairs(store, config, upload)
    assert (full.a.channels, full.b.channels) == (1, 3)
    for direction in ("a2b", "b2a") if kind == "unpaired" else ("a2b",):
        src, dst = (full.a, full.b) if direction == "a2b" else (full.b, full.a)
        channels = (src.channels, dst.channels)
        inputs, targets = validation_examples(store, config, upload, direction, 64, channels)
        assert torch.equal(inputs, src.split()[1])
        if kind == "paired":
            assert targets is not None and torch.equal(targets, dst.split()[1])
        else:
            assert targets is None
        first, _ = validation_examples(store, config, upload, direction, 1, channels)
        assert torch.equal(first, inputs[:1])
