"""Datasets: shapes, built-in lookup, npz and image-folder readers, conversions, the Batcher."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gan_core.data as data
from gan_core.data import (
    BUILTINS,
    Batcher,
    DatasetError,
    DatasetInfo,
    ImageTensorDataset,
    builtin_info,
    dataset_availability,
    load_dataset,
    make_shapes,
)

# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 00 00 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """Ten 28x28 images in a fake Debian fashion-mnist directory."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    debian = tmp_path / "debian"
    debian.mkdir()
    write_idx(debian / "train-images-idx3-ubyte.gz", images)
    write_idx(debian / "train-labels-idx1-ubyte.gz", labels)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    return images, labels


def tiny_dataset(n: int = 10, labelled: bool = True) -> ImageTensorDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    labels = torch.arange(n) % 2 if labelled else None
    return ImageTensorDataset(images, labels, DatasetInfo("tiny", 1, 2 if labelled else None, 4))


# --------------------------------------------------------------------------- shapes


def test_shapes_deterministic_and_seed_dependent():
    a, la = make_shapes(64, 16, seed=3)
    b, lb = make_shapes(64, 16, seed=3)
    c, _ = make_shapes(64, 16, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == (64, 1, 16, 16) and a.is_contiguous()
    assert la.dtype == torch.int64 and la.shape == (64,)


def test_shapes_balanced_and_distinct():
    x, y = make_shapes(1000, 32, seed=0)
    counts = torch.bincount(y, minlength=5)
    assert counts.min() >= 190 and counts.max() <= 210
    means = torch.stack([x[y == c].float().mean(0) for c in range(5)])  # (5, 1, 32, 32)
    for i in range(5):
        for j in range(i + 1, 5):
            assert (means[i] - means[j]).abs().mean() > 2.0, (i, j)
    # Dark background, brighter shape: the corners are dark, the image has bright pixels.
    assert x[:, :, 0, 0].float().mean() < 0.15 * 255
    assert (x.flatten(1).amax(1) > 0.5 * 255).all()


def test_shapes_colour_and_speed():
    x, _ = make_shapes(200, 32, seed=0, channels=3)
    assert x.shape == (200, 3, 32, 32)
    assert (x[:, 0] != x[:, 1]).any()  # really coloured, not grey repeated
    make_shapes(10, 32, seed=0)  # warm-up
    start = time.process_time()  # CPU time: less sensitive to a busy machine than wall time
    make_shapes(10_000, 32, seed=1)
    assert time.process_time() - start < 4.0  # ~0.1-0.5 s; a per-image Python loop takes 10+


def test_load_shapes_builtin():
    ds = load_dataset("shapes", image_size=28, max_items=50, seed=2)
    assert ds.images.shape == (50, 1, 28, 28) and len(ds) == 50
    assert ds.info == BUILTINS["shapes"]
    rgb = load_dataset("shapes", image_size=16, channels=3, max_items=20)
    assert rgb.images.shape == (20, 3, 16, 16) and rgb.info.channels == 3


# --------------------------------------------------------------------------- built-ins


def test_builtin_info_is_static():
    assert builtin_info("shapes") == DatasetInfo(
        "shapes", 1, 5, None, ("circle", "square", "triangle", "cross", "ring")
    )
    assert builtin_info("fashion-mnist").native_size == 28
    assert builtin_info("cifar10").channels == 3
    assert builtin_info("mnist").num_classes == 10
    for name in ("npz:/x.npz", "image-folder:/x", "nope", "Shapes"):
        assert builtin_info(name) is None
    assert data.SHAPES_SIZE == 20_000


def test_fashion_mnist_from_debian_gz(fake_fashion):
    images, labels = fake_fashion
    ds = load_dataset("fashion-mnist", image_size=28)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist() and ds.labels.dtype == torch.int64
    assert ds.info.name == "fashion-mnist" and ds.info.num_classes == 10
    assert load_dataset("fashion-mnist", image_size=28, max_items=3).images.shape[0] == 3


def test_fashion_mnist_torchvision_layout_wins_over_debian(fake_fashion, tmp_path):
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    ones = np.ones((4, 28, 28), dtype=np.uint8)
    for stem, array in (
        ("train-images-idx3-ubyte", ones),
        ("train-labels-idx1-ubyte", ones[:, 0, 0]),
    ):
        write_idx(raw / f"{stem}.gz", array)
        (raw / stem).write_bytes(gzip.decompress((raw / f"{stem}.gz").read_bytes()))
        (raw / f"{stem}.gz").unlink()  # torchvision keeps the raw files un-gzipped
    ds = load_dataset("fashion-mnist", image_size=28, data_dirs=[tmp_path / "root"])
    assert len(ds) == 4 and ds.images.eq(1).all()
    assert dataset_availability("fashion-mnist", [tmp_path / "root"]) == (True, str(raw))


def test_fashion_mnist_real_or_clear_error(monkeypatch, tmp_path):
    real = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if real.is_file():  # Debian package dataset-fashion-mnist installed
        ds = load_dataset("fashion-mnist", image_size=32, max_items=100)
        assert ds.images.shape == (100, 1, 32, 32) and ds.labels.max() <= 9
        assert dataset_availability("fashion-mnist") == (True, str(real.parent))
    else:
        with pytest.raises(DatasetError) as err:
            load_dataset("fashion-mnist", image_size=28, data_dirs=[tmp_path])
        msg = str(err.value)
        assert str(tmp_path / "FashionMNIST" / "raw") in msg and str(real.parent) in msg
        assert "apt-get install dataset-fashion-mnist" in msg


def test_missing_builtins_say_where_to_put_files(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", image_size=28, data_dirs=[tmp_path / "a", tmp_path / "b"])
    msg = str(err.value)
    for where in ("a/FashionMNIST/raw", "b/fashion-mnist", "no-debian", "train-images-idx3-ubyte"):
        assert where in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", image_size=32, data_dirs=[tmp_path])
    ok, where = dataset_availability("mnist", [tmp_path])
    assert not ok and str(tmp_path / "MNIST" / "raw") in where
    assert dataset_availability("shapes") == (True, "generated procedurally")
    assert dataset_availability("nope")[0] is False
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("nope", image_size=28)


def test_cifar10_files_not_genuine(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))):
        (root / name).write_bytes(b"junk")
    assert dataset_availability("cifar10", [tmp_path]) == (True, str(root))
    # torchvision checksums the files before unpickling anything.
    with pytest.raises(DatasetError, match="corrupted"):
        load_dataset("cifar10", image_size=32, data_dirs=[tmp_path])


def test_corrupt_idx_is_a_dataset_error(monkeypatch, tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not idx at all")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", image_size=28)


# --------------------------------------------------------------------------- conversions


def test_resize_and_channel_conversion(fake_fashion):
    ds = load_dataset("fashion-mnist", image_size=32, channels=3)
    assert ds.images.shape == (10, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.images.is_contiguous() and ds.info.channels == 3
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # 1 -> 3 repeats
    small = load_dataset("fashion-mnist", image_size=14)
    x = torch.from_numpy(fake_fashion[0]).float().unsqueeze(1)
    expected = F.interpolate(x, size=(14, 14), mode="bilinear", antialias=True).round()
    assert torch.equal(small.images, expected.to(torch.uint8))
    assert abs(small.images.float().mean() - x.mean()) < 1.0  # a filter, not a subsample
    same = load_dataset("fashion-mnist", image_size=28)
    assert torch.equal(same.images[:, 0], torch.from_numpy(fake_fashion[0]))  # no resampling


def test_rgb_to_gray_uses_luma(tmp_path):
    x = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    x[0, ..., 0], x[1, ..., 1], x[2, ..., 2] = 255, 255, 255
    np.savez(tmp_path / "rgb.npz", x=x)
    ds = load_dataset(f"npz:{tmp_path / 'rgb.npz'}", image_size=8, channels=1)
    assert ds.images.shape == (3, 1, 8, 8) and ds.info.channels == 1
    assert ds.images[:, 0, 0, 0].tolist() == [76, 150, 29]  # 0.299, 0.587, 0.114 of 255


# --------------------------------------------------------------------------- npz


def test_npz_happy_path(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 16, 16), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", image_size=16)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(x)) and ds.labels.tolist() == y.tolist()
    assert ds.info == DatasetInfo("npz", 1, 3, 16)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((2, 8, 8, 3), dtype=np.uint8))
    rgb = load_dataset(f"npz:{tmp_path / 'rgb.npz'}", image_size=16)
    assert rgb.images.shape == (2, 3, 16, 16) and rgb.labels is None
    assert rgb.info.num_classes is None


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.zeros((2, 8, 8), np.uint8)}, "no array 'x'"),
        ({"x": np.zeros((2, 8, 8), np.float32)}, "'x' must be uint8"),
        ({"x": np.zeros((2, 8, 8, 2), np.uint8)}, "'x' must be N×H×W"),
        ({"x": np.zeros((8, 8), np.uint8)}, "'x' must be N×H×W"),
        ({"x": np.zeros((2, 8, 6), np.uint8)}, r"square images .* \(2, 8, 6, 1\)"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([0, 1, 1])}, "'y' must be integers"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([0.0, 1.0])}, "'y' must be integers"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([0, 0])}, "K >= 2"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.array([-1, 1])}, "K >= 2"),
        ({"x": np.array([None, {"a": 1}], dtype=object)}, "not a readable .npz"),
    ],
)
def test_npz_errors(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(f"npz:{path}", image_size=8)
    assert str(path) in str(err.value)


def test_npz_missing_or_not_npz(tmp_path):
    with pytest.raises(DatasetError, match="missing.npz"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}", image_size=8)
    (tmp_path / "junk.npz").write_bytes(b"junk" * 10)
    with pytest.raises(DatasetError, match="junk.npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}", image_size=8)
    with pytest.raises(DatasetError, match="give a path"):
        load_dataset("npz:", image_size=8)
    assert dataset_availability(f"npz:{tmp_path / 'junk.npz'}") == (
        True,
        str(tmp_path / "junk.npz"),
    )
    assert dataset_availability(f"npz:{tmp_path / 'missing.npz'}")[0] is False


# --------------------------------------------------------------------------- image folders


def save(path: Path, mode: str, size: tuple[int, int], color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_with_classes(tmp_path):
    save(tmp_path / "cats" / "a.png", "RGB", (40, 20), (255, 0, 0))
    save(tmp_path / "cats" / "b.JPG", "RGB", (20, 20), (0, 255, 0))
    save(tmp_path / "dogs" / "c.bmp", "L", (16, 16), 200)
    (tmp_path / "dogs" / "notes.txt").write_text("ignored: not an image extension")
    (tmp_path / "empty").mkdir()  # a folder without images is not a class
    ds = load_dataset(f"image-folder:{tmp_path}", image_size=16)
    assert ds.info.class_names == ("cats", "dogs") and ds.info.num_classes == 2
    assert ds.info.name == "image-folder" and ds.info.channels == 3
    assert ds.labels.tolist() == [0, 0, 1] and ds.images.shape == (3, 3, 16, 16)
    assert ds.images[0, :, 8, 8].tolist() == [255, 0, 0]  # center-cropped, resized
    assert ds.images[2, :, 8, 8].tolist() == [200, 200, 200]  # grey promoted to RGB


def test_image_folder_unlabeled_gray(tmp_path):
    save(tmp_path / "x.png", "L", (10, 10), 50)
    save(tmp_path / "y.gif", "L", (12, 10), 100)
    save(tmp_path / "sub" / "z.png", "L", (10, 10), 0)  # top level only when unlabeled
    ds = load_dataset(f"image-folder:{tmp_path}", image_size=16)
    assert ds.labels is None and ds.info.num_classes is None and ds.info.channels == 1
    assert ds.images.shape == (2, 1, 16, 16)
    assert ds.images[:, 0, 8, 8].tolist() == [50, 100]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(f"image-folder:{tmp_path}", image_size=16)
    save(tmp_path / "only" / "a.png", "L", (8, 8), 0)
    with pytest.raises(DatasetError, match="only one class subfolder"):
        load_dataset(f"image-folder:{tmp_path}", image_size=16)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"image-folder:{tmp_path / 'missing'}", image_size=16)
    save(tmp_path / "ok.png", "L", (8, 8), 0)
    (tmp_path / "fake.png").write_text("this is not a png")
    with pytest.raises(DatasetError, match="fake.png"):
        load_dataset(f"image-folder:{tmp_path}", image_size=16)


def test_image_folder_refuses_huge_images(tmp_path):
    save(tmp_path / "huge.png", "L", (5000, 4000), 0)  # 20M pixels > 4096*4096
    with pytest.raises(DatasetError, match=r"huge.png: 5000x4000 pixels"):
        load_dataset(f"image-folder:{tmp_path}", image_size=16)


# --------------------------------------------------------------------------- Batcher


def test_batcher_batches_and_epochs():
    b = Batcher(tiny_dataset(10), 4, seed=0)
    seen = []
    for _ in range(2):  # one epoch: 2 full batches, the tail of 2 is dropped
        x, y = b.next()
        assert x.shape == (4, 1, 4, 4) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.shape == (4,)
        assert x.min() >= -1 and x.max() <= 1
        ids = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()
        assert torch.equal(y, ids % 2)  # labels follow their images
        seen += ids.tolist()
    assert len(set(seen)) == 8  # without replacement within an epoch
    assert b.epoch == pytest.approx(0.8)
    b.next()  # crosses the boundary: a fresh permutation, still a full batch
    assert b.epoch == pytest.approx(1.2)
    extremes = ImageTensorDataset(
        torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1),
        None,
        DatasetInfo("e", 1, None, 1),
    )
    x, y = Batcher(extremes, 2, seed=0).next()
    assert y is None and sorted(x.flatten().tolist()) == [-1.0, 1.0]


def test_batcher_deterministic_for_seed():
    def draw(seed):
        b = Batcher(tiny_dataset(10), 3, seed=seed)
        return torch.cat([b.next()[0] for _ in range(7)])

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_batcher_state_round_trip():
    ds = tiny_dataset(10)
    original = Batcher(ds, 3, seed=5)
    for _ in range(4):
        original.next()
    state = original.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    expected = [original.next() for _ in range(6)]  # crosses an epoch boundary
    restored = Batcher(ds, 3, seed=123)
    restored.load_state_dict(state)
    assert restored.epoch == pytest.approx(1.2)
    for (x1, y1), (x2, y2) in zip(expected, (restored.next() for _ in range(6)), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert restored.epoch == original.epoch


def test_batcher_state_survives_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    b = Batcher(tiny_dataset(10), 4, seed=0)
    b.next()
    safetensors_torch.save_file(b.state_dict(), tmp_path / "s.safetensors")
    other = Batcher(tiny_dataset(10), 4, seed=9)
    other.load_state_dict(safetensors_torch.load_file(tmp_path / "s.safetensors"))
    assert torch.equal(b.next()[0], other.next()[0])


def test_batcher_rejects_bad_sizes():
    with pytest.raises(DatasetError, match="batch_size"):
        Batcher(tiny_dataset(3), 4, seed=0)
    b = Batcher(tiny_dataset(3), 2, seed=0)
    with pytest.raises(ValueError, match="3 images"):
        Batcher(tiny_dataset(4), 2, seed=0).load_state_dict(b.state_dict())
