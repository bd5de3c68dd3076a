"""Feature extractors: the rotation recipe, save/load with kind and version, hashes."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gan_core.data import make_shapes
from gan_core.metrics import (
    EXTRACTOR_VERSION,
    FeatureClassifier,
    classifier_accuracy,
    dataset_fingerprint,
    extract_features,
    extractor_digest,
    frechet_distance,
    load_classifier,
    load_extractor,
    mean_cov,
    read_extractor_metadata,
    save_extractor,
    train_extractor,
    train_rotation_extractor,
)
from gan_core.metrics import features as features_module

TRIANGLE = 2  # gan_core.data.shapes.SHAPE_NAMES: apex up, so which way is up can be learned


def triangles(n_drawn: int, seed: int) -> torch.Tensor:
    images, labels = make_shapes(n_drawn, 16, seed)
    return images[labels == TRIANGLE]


@pytest.fixture(scope="module")
def train_triangles() -> torch.Tensor:
    return triangles(8000, seed=1)  # 1,600 images


@pytest.fixture(scope="module")
def rotation_model(train_triangles) -> FeatureClassifier:
    return train_rotation_extractor(train_triangles, epochs=4, batch_size=64, seed=0)


def rotated(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by k * 90 degrees, k = 0, 1, 2, 3, 0, ...; and the k."""
    k = torch.arange(len(images)) % 4
    return torch.stack(
        [torch.rot90(im, int(r), dims=(1, 2)) for im, r in zip(images, k, strict=True)]
    ), k


def fd_ratio(
    model: torch.nn.Module, ref: torch.Tensor, same: torch.Tensor, other: torch.Tensor
) -> float:
    """FD(other vs ref) / FD(same vs ref): how far apart two distributions look in the features."""
    mu, sigma = mean_cov(extract_features(model, ref))
    fd = [frechet_distance(mu, sigma, *mean_cov(extract_features(model, x))) for x in (same, other)]
    return fd[1] / fd[0]


def test_rotation_extractor_learns_which_way_is_up(rotation_model):
    assert rotation_model.kind == "rotation" and rotation_model.num_classes == 4
    assert not rotation_model.training
    images, k = rotated(triangles(2000, seed=2))
    accuracy = classifier_accuracy(rotation_model, images, k)
    assert accuracy > 0.7, accuracy  # chance is 0.25


def test_rotation_features_separate_distributions(rotation_model, train_triangles):
    held_out = triangles(2000, seed=2)
    upside_down = held_out.flip(2)  # another distribution with the same pixel statistics
    trained = fd_ratio(rotation_model, train_triangles, held_out, upside_down)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = FeatureClassifier(1, 4, kind="rotation").eval()
    baseline = fd_ratio(untrained, train_triangles, held_out, upside_down)
    assert trained > 100, trained
    assert trained > 5 * baseline, (trained, baseline)  # the task shaped the features


def test_rotation_training_is_seeded_and_needs_square_images(train_triangles):
    a = train_rotation_extractor(train_triangles[:128], epochs=1, batch_size=64, seed=3)
    b = train_rotation_extractor(train_triangles[:128], epochs=1, batch_size=64, seed=3)
    assert extractor_digest(a) == extractor_digest(b)
    with pytest.raises(ValueError, match="square"):
        train_rotation_extractor(torch.zeros(4, 1, 16, 20, dtype=torch.uint8), epochs=1)


def test_train_extractor_picks_the_recipe_by_labels(monkeypatch):
    images, labels = make_shapes(256, 16, seed=4)
    monkeypatch.setattr(features_module, "MIN_TRAIN_STEPS", 2)
    assert train_extractor(images, labels, num_classes=5).kind == "classifier"
    assert train_extractor(images, labels).num_classes == 5  # inferred from the labels
    assert train_extractor(images).kind == "rotation"


def test_default_epochs_give_small_datasets_enough_steps():
    assert features_module.default_epochs("classifier", 60_000) == 2  # Fashion-MNIST
    epochs = features_module.default_epochs("rotation", 1000)
    assert epochs * -(-1000 // features_module.BATCH_SIZE) >= features_module.MIN_TRAIN_STEPS


def test_fingerprint_covers_pixels_labels_and_shape():
    images, labels = make_shapes(300, 16, seed=5)
    base = dataset_fingerprint(images, labels)
    assert len(base) == 64 and base == dataset_fingerprint(images.clone(), labels.int())
    pixel = images.clone()
    pixel[123, 0, 7, 9] ^= 1
    label = labels.clone()
    label[17] = (label[17] + 1) % 5
    changed = {
        dataset_fingerprint(pixel, labels),
        dataset_fingerprint(images, label),
        dataset_fingerprint(images, None),
        dataset_fingerprint(images.reshape(300, 1, 8, 32), labels),  # same bytes, other shape
        dataset_fingerprint(images.flip(0), labels.flip(0)),  # order
    }
    assert base not in changed and len(changed) == 5
    with pytest.raises(ValueError):
        dataset_fingerprint(images.float(), labels)


def test_fingerprint_is_fast_for_fashion_mnist_size():
    images = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (60_000,))
    t0 = time.perf_counter()
    dataset_fingerprint(images, labels)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s measured; generous for a busy machine


def test_save_load_round_trip_keeps_kind_version_and_metadata(rotation_model, tmp_path):
    path = tmp_path / "rot.safetensors"
    save_extractor(rotation_model, path, metadata={"dataset_fingerprint": "abc"})
    meta = read_extractor_metadata(path)
    assert meta["kind"] == "rotation" and meta["extractor_version"] == EXTRACTOR_VERSION
    assert meta["dataset_fingerprint"] == "abc" and meta["num_classes"] == "4"
    loaded = load_extractor(path)
    assert loaded.kind == "rotation" and not loaded.training
    assert extractor_digest(loaded) == extractor_digest(rotation_model)
    x = triangles(200, seed=7)
    assert torch.equal(extract_features(loaded, x), extract_features(rotation_model, x))
    with pytest.raises(ValueError, match="not a classifier"):
        load_classifier(path)  # the classifier-only loader refuses another kind
    with pytest.raises(ValueError, match="reserved"):
        save_extractor(rotation_model, path, metadata={"kind": "classifier"})
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temp file


def test_load_refuses_foreign_garbage_and_other_versions(rotation_model, tmp_path):
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "something-else"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    for path in (foreign, garbage):
        with pytest.raises(ValueError):
            load_extractor(path)
        with pytest.raises(ValueError):
            read_extractor_metadata(path)
    # the same file with an older recipe version in its metadata
    good = tmp_path / "rot.safetensors"
    save_extractor(rotation_model, good)
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta | {"extractor_version": "0"})
    with pytest.raises(ValueError, match="recipe"):
        load_extractor(old)
    wrong_shape = tmp_path / "wrong.safetensors"
    save_file(tensors, str(wrong_shape), metadata=meta | {"feature_dim": "64"})
    with pytest.raises(ValueError, match="do not fit"):
        load_extractor(wrong_shape)


def test_extractor_digest_follows_the_weights(rotation_model):
    copy = FeatureClassifier(1, 4, kind="rotation")
    copy.load_state_dict(rotation_model.state_dict())
    assert extractor_digest(copy) == extractor_digest(rotation_model)
    with torch.no_grad():
        copy.head.bias[0] += 1e-3
    assert extractor_digest(copy) != extractor_digest(rotation_model)
