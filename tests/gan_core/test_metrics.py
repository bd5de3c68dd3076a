"""Tests for gan_core.metrics: classifier, Fréchet distance, coverage, save/load, scorer."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gan_core.metrics import (
    FeatureClassifier,
    QualityScore,
    QualityScorer,
    class_coverage,
    classifier_accuracy,
    feature_stats,
    frechet_distance,
    load_classifier,
    save_classifier,
    train_classifier,
)

NUM_CLASSES = 5
SIDE = 32


def toy_dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n uint8 (n,1,32,32) images of 5 pattern classes with random offsets, periods and noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=g)]
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    yy, xx = yy.expand(n, SIDE, SIDE), xx.expand(n, SIDE, SIDE)

    def per_image(lo: int, hi: int) -> torch.Tensor:
        return torch.randint(lo, hi, (n, 1, 1), generator=g)

    period, off_y, off_x = per_image(3, 6), per_image(0, 16), per_image(0, 16)
    radius = per_image(6, 11)
    cy, cx = per_image(10, 22), per_image(10, 22)
    patterns = torch.stack(
        [
            ((yy + off_y) // period) % 2 == 0,  # horizontal stripes
            ((xx + off_x) // period) % 2 == 0,  # vertical stripes
            (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2,  # filled disc
            (((yy + off_y) // period) + ((xx + off_x) // period)) % 2 == 0,  # checkerboard
            ((yy + xx + off_x) // period) % 2 == 0,  # diagonal stripes
        ]
    )
    mask = patterns[labels, torch.arange(n)].float()
    # Random contrast and additive noise so the classes are not single points in pixel space.
    low, high = per_image(20, 80).float(), per_image(170, 235).float()
    img = low + (high - low) * mask + 15.0 * torch.randn(n, SIDE, SIDE, generator=g)
    return img.clamp(0, 255).round().to(torch.uint8).unsqueeze(1), labels


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def train_data():
    return toy_dataset(2000, seed=1)


@pytest.fixture(scope="module")
def heldout_data():
    return toy_dataset(1000, seed=2)


@pytest.fixture(scope="module")
def clf(train_data):
    images, labels = train_data
    return train_classifier(images, labels, num_classes=NUM_CLASSES, epochs=2, seed=0)


@pytest.fixture(scope="module")
def scorer(clf, train_data):
    return QualityScorer(clf, train_data[0])


def test_classifier_shapes_any_side_and_channels():
    model = FeatureClassifier(channels=3, num_classes=7, feature_dim=64)
    for side in (16, 28, 48):
        x = torch.rand(4, 3, side, side) * 2 - 1
        assert model.features(x).shape == (4, 64)
        assert model(x).shape == (4, 7)
    with pytest.raises(ValueError):
        model.features(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError):
        model.features(torch.zeros(2, 1, 32, 32))


def test_classifier_learns_toy_classes(clf, heldout_data):
    assert not clf.training
    acc = classifier_accuracy(clf, *heldout_data)
    assert acc > 0.9, acc


def test_training_is_deterministic_per_seed(train_data):
    images, labels = train_data[0][:256], train_data[1][:256]
    rng_before = torch.get_rng_state()
    a = train_classifier(images, labels, num_classes=NUM_CLASSES, epochs=1, batch_size=64, seed=3)
    b = train_classifier(images, labels, num_classes=NUM_CLASSES, epochs=1, batch_size=64, seed=3)
    c = train_classifier(images, labels, num_classes=NUM_CLASSES, epochs=1, batch_size=64, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    # Training a scorer must not move the caller's global RNG stream.
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_train_classifier_rejects_bad_input(train_data):
    images, labels = train_data
    with pytest.raises(ValueError):
        train_classifier(to_float(images[:10]), labels[:10], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError):
        train_classifier(images[:10], labels[:9], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError):
        train_classifier(images[:10], labels[:10] + 5, num_classes=NUM_CLASSES)


def _random_spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_identical_is_zero_and_symmetric():
    d = 16
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(d, generator=g), torch.randn(d, generator=g)
    s1, s2 = _random_spd(d, 1), _random_spd(d, 2)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    fd12, fd21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert fd12 > 1.0
    assert fd12 == pytest.approx(fd21, rel=1e-9)


def test_frechet_closed_forms():
    g = torch.Generator().manual_seed(0)
    d = 12
    # Diagonal covariances: ||mu1-mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
    f64 = {"generator": g, "dtype": torch.float64}
    mu1, mu2 = torch.randn(d, **f64), torch.randn(d, **f64)
    a, b = torch.rand(d, **f64) + 0.1, torch.rand(d, **f64) + 0.1
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected.item(), rel=1e-9)
    # Full covariances with S2 = c^2 S1: Tr((S1 S2)^1/2) = c Tr(S1), so FD = (1-c)^2 Tr(S1).
    s1, c = _random_spd(d, 5), 3.0
    assert frechet_distance(mu1, s1, mu1, c**2 * s1) == pytest.approx(
        (1 - c) ** 2 * s1.trace().item(), rel=1e-9
    )
    # Rank-deficient covariances (e.g. one repeated image) stay finite and non-negative.
    zero = torch.zeros(d, d, dtype=torch.float64)
    fd = frechet_distance(mu1, zero, mu1, s1)
    assert math.isfinite(fd) and fd == pytest.approx(s1.trace().item(), rel=1e-9)


def test_feature_stats_uint8_matches_float(clf, heldout_data):
    images = heldout_data[0][:300]
    mu_u, sig_u = feature_stats(clf, images, batch_size=128)
    mu_f, sig_f = feature_stats(clf, to_float(images))
    assert mu_u.dtype == sig_u.dtype == torch.float64
    assert mu_u.shape == (clf.feature_dim,) and sig_u.shape == (clf.feature_dim,) * 2
    torch.testing.assert_close(mu_u, mu_f)
    torch.testing.assert_close(sig_u, sig_f)


def test_fd_separates_real_from_noise_and_collapse(scorer, heldout_data):
    images, labels = heldout_data
    fd_real = scorer.score(to_float(images)).fd
    fd_noise = scorer.score(
        torch.rand(1000, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ).fd
    fd_one_class = scorer.score(to_float(images[labels == 2])).fd
    assert fd_real * 10 < fd_noise, (fd_real, fd_noise)
    assert fd_real * 10 < fd_one_class, (fd_real, fd_one_class)


def test_class_coverage(clf, heldout_data):
    images, labels = heldout_data
    covered, counts = class_coverage(clf, images)
    assert covered == NUM_CLASSES
    assert counts.shape == (NUM_CLASSES,) and int(counts.sum()) == images.shape[0]
    covered, counts = class_coverage(clf, to_float(images[labels == 3]))
    assert covered == 1 and int(counts.argmax()) == 3
    repeated = to_float(images[:1]).expand(200, -1, -1, -1)
    covered, counts = class_coverage(clf, repeated)
    assert covered == 1 and int(counts.max()) == 200
    # min_share is a fraction of the samples: 1 of 100 images is under 2% but not under 1%.
    mixed = torch.cat([images[labels == 0][:99], images[labels == 1][:1]])
    assert class_coverage(clf, mixed)[0] == 1
    assert class_coverage(clf, mixed, min_share=0.01)[0] == 2


def test_save_load_round_trip(clf, heldout_data, tmp_path):
    path = tmp_path / "clf.safetensors"
    save_classifier(clf, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["channels"] == "1" and meta["num_classes"] == "5" and meta["feature_dim"] == "128"
    loaded = load_classifier(path)
    assert isinstance(loaded, FeatureClassifier) and not loaded.training
    x = to_float(heldout_data[0][:64])
    with torch.no_grad():
        assert torch.equal(loaded.features(x), clf.features(x))


def test_load_rejects_foreign_safetensors(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(ValueError):
        load_classifier(path)


def test_quality_scorer_end_to_end(train_data, heldout_data):
    # Sorted by class, as datasets on disk often are: the reference subset must still span classes.
    order = train_data[1].argsort(stable=True)
    images, labels = train_data[0][order], train_data[1][order]
    scorer = QualityScorer.fit(images, labels, num_classes=NUM_CLASSES, epochs=1, ref_size=500)
    good = scorer.score(to_float(heldout_data[0]))
    bad = scorer.score(to_float(heldout_data[0][heldout_data[1] == 4]))
    assert isinstance(good, QualityScore)
    assert good.as_dict() == {
        "fd": good.fd,
        "classes_covered": NUM_CLASSES,
        "num_classes": NUM_CLASSES,
    }
    assert bad.classes_covered < NUM_CLASSES
    assert good.fd * 10 < bad.fd, (good, bad)
    # uint8 input scores the same as its [-1, 1] float form.
    assert scorer.score(heldout_data[0]).fd == pytest.approx(good.fd, rel=1e-6)
