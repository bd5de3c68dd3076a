"""Real-data references and score_generator: determinism, label policies, better beats worse."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gan_core.checkpoint import load_generator
from gan_core.config import TrainConfig
from gan_core.data import load_dataset, make_shapes
from gan_core.metrics import (
    GeneratorScore,
    build_reference,
    load_reference,
    save_reference,
    score_generator,
    train_classifier,
    train_rotation_extractor,
)
from gan_core.nets import build_generator
from gan_core.training import resolve_config, train

SIDE, CLASSES, N = 16, 5, 500  # N: samples per score, small so the tests stay fast
GAN = TrainConfig(
    dataset="shapes",
    image_size=SIDE,
    g_width=16,
    d_width=16,
    latent_dim=32,
    batch_size=32,
    steps=300,
    checkpoint_every=300,
    keep_checkpoints=1,
    augment=None,
    seed=0,
    device="cpu",
)


class ReplayGenerator(nn.Module):
    """A "perfect" G: each latent picks one of a set of real images (by class when conditional)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = 8, None if labels is None else int(labels.max()) + 1
        self.images, self.labels = images.float() / 127.5 - 1, labels
        self.batch_sizes: list[int] = []
        self.seen_labels: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.batch_sizes.append(len(z))
        pick = (z[:, 0].abs() * 1e6).long()
        if self.labels is None:
            return self.images[pick % len(self.images)]
        assert y is not None
        self.seen_labels.append(y)
        out = []
        for i, c in zip(pick, y, strict=True):
            pool = (self.labels == c).nonzero().squeeze(1)
            out.append(self.images[pool[i % len(pool)]])
        return torch.stack(out)


class NoiseGenerator(nn.Module):
    """A useless G: a fixed random projection of z, squashed into [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = 8, None
        self.proj = nn.Linear(8, SIDE * SIDE)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(3 * self.proj(z)).view(-1, 1, SIDE, SIDE)


@pytest.fixture(scope="module")
def real() -> tuple[torch.Tensor, torch.Tensor]:
    return make_shapes(2000, SIDE, seed=11)


@pytest.fixture(scope="module")
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    return make_shapes(1000, SIDE, seed=12)


@pytest.fixture(scope="module")
def clf(real):
    return train_classifier(*real, num_classes=CLASSES, epochs=5, seed=0)


@pytest.fixture(scope="module")
def reference(clf, real):
    return build_reference(clf, real[0], features_size=N, dataset_fingerprint="fp")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    data = load_dataset("shapes", image_size=SIDE, max_items=4000, seed=0)
    result = train(GAN, tmp_path_factory.mktemp("gan"), dataset=data)
    assert result.status == "succeeded"
    torch.manual_seed(GAN.seed)  # the weights the run started from
    untrained = build_generator(resolve_config(GAN, data)).eval()
    return result.checkpoint, untrained


def score(generator: nn.Module, clf, reference, **kwargs) -> GeneratorScore:
    # subsets of half the samples, so that KID's subsets differ (and its std is not 0)
    return score_generator(
        generator, clf, reference, **{"num_samples": N, "kid_subset_size": N // 2, **kwargs}
    )


def test_reference_holds_stats_and_a_seeded_feature_subset(reference, clf, real):
    d = clf.feature_dim
    assert reference.mu.shape == (d,) and reference.sigma.shape == (d, d)
    assert reference.features.shape == (N, d) and reference.features.dtype == torch.float32
    assert reference.num_images == 2000 and reference.image_shape == (1, SIDE, SIDE)
    assert reference.kind == "classifier" and reference.num_classes == CLASSES
    again = build_reference(clf, real[0], features_size=N)
    assert torch.equal(again.features, reference.features)
    other_seed = build_reference(clf, real[0], features_size=N, seed=1)
    assert not torch.equal(other_seed.features, reference.features)


def test_reference_save_load_round_trip(reference, tmp_path):
    path = tmp_path / "ref.safetensors"
    save_reference(reference, path)
    loaded = load_reference(path)
    for name in ("mu", "sigma", "features"):
        assert torch.equal(getattr(loaded, name), getattr(reference, name))
    for name in (
        "kind",
        "extractor_digest",
        "num_classes",
        "image_shape",
        "num_images",
        "seed",
        "dataset_fingerprint",
    ):
        assert getattr(loaded, name) == getattr(reference, name), name
    bad = tmp_path / "bad.safetensors"
    save_file({"mu": torch.zeros(2)}, str(bad), metadata={"format": "nope"})
    with pytest.raises(ValueError):
        load_reference(bad)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x01" * 40)
    with pytest.raises(ValueError):
        load_reference(tmp_path / "garbage.safetensors")


def test_same_seed_same_numbers_other_seed_other_numbers(trained_run, clf, reference):
    G = load_generator(trained_run[0])
    a, b = score(G, clf, reference, seed=0), score(G, clf, reference, seed=0)
    assert a == b
    c = score(G, clf, reference, seed=1)
    assert c.fd != a.fd and c.kid_mean != a.kid_mean
    assert all(math.isfinite(v) for v in (a.fd, a.kid_mean, a.kid_std, a.precision, a.recall))
    assert a.as_dict()["num_samples"] == N and a.extractor == "classifier"


def test_trained_generator_beats_untrained_and_noise(trained_run, clf, reference):
    trained = score(load_generator(trained_run[0]), clf, reference)
    untrained = score(trained_run[1], clf, reference)
    noise = score(NoiseGenerator(), clf, reference)
    report = f"trained {trained}\nuntrained {untrained}\nnoise {noise}"
    for worse in (untrained, noise):
        assert trained.fd < 0.5 * worse.fd, report
        assert trained.kid_mean < 0.5 * worse.kid_mean, report
        assert trained.precision > worse.precision, report
        assert trained.recall >= worse.recall, report
    assert trained.classes_covered is not None and trained.classes_covered >= 4, report


def test_real_images_score_near_perfect_and_noise_near_zero(clf, reference, held_out):
    replay = score(ReplayGenerator(held_out[0]), clf, reference)
    noise = score(NoiseGenerator(), clf, reference)
    assert replay.precision > 0.6 and replay.recall > 0.6, replay
    assert replay.kid_mean < 3 * replay.kid_std + 1e-3, replay
    assert replay.classes_covered == CLASSES and replay.num_classes == CLASSES
    # (k-NN precision is lenient with far-off fakes near real outliers, whose balls are big:
    # measured 0.65 here. Recall is not.)
    assert noise.recall < 0.1 and noise.precision < replay.precision - 0.1, noise
    assert noise.fd > 20 * replay.fd and noise.kid_mean > 20 * abs(replay.kid_mean), (replay, noise)


def test_samples_are_made_in_batches(clf, reference, held_out):
    G = ReplayGenerator(held_out[0])
    a = score(G, clf, reference, batch_size=64)
    assert max(G.batch_sizes) == 64 and sum(G.batch_sizes) == N
    b = score(G, clf, reference, batch_size=500)
    assert b.fd == pytest.approx(a.fd, rel=1e-4) and b.precision == a.precision


def test_conditional_label_policies(clf, reference, held_out):
    G = ReplayGenerator(*held_out)
    balanced = score(G, clf, reference, labels="balanced")
    counts = torch.bincount(torch.cat(G.seen_labels), minlength=CLASSES)
    assert counts.tolist() == [N // CLASSES] * CLASSES and balanced.classes_covered == CLASSES
    G.seen_labels.clear()
    uniform = score(G, clf, reference, labels="uniform", seed=4)
    drawn = torch.cat(G.seen_labels)
    G.seen_labels.clear()
    score(G, clf, reference, labels="uniform", seed=4)
    assert torch.equal(torch.cat(G.seen_labels), drawn)  # seeded
    assert len(set(drawn.tolist())) == CLASSES and uniform.classes_covered == CLASSES
    one_class = score(G, clf, reference, labels=torch.tensor(3))
    assert one_class.classes_covered == 1 and one_class.recall < 0.5 * balanced.recall
    with pytest.raises(ValueError):
        score(G, clf, reference, labels="sorted")


def test_generator_is_scored_in_eval_mode_and_left_as_it_was(trained_run, clf, reference):
    G = load_generator(trained_run[0]).train()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    in_eval = score(G, clf, reference)
    assert G.training  # restored
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # BN stats untouched
    assert in_eval == score(G.eval(), clf, reference)


def test_mismatches_are_refused(clf, reference, real, held_out):
    other = train_classifier(*real, num_classes=CLASSES, epochs=1, seed=1)
    with pytest.raises(ValueError, match="another extractor"):
        score(ReplayGenerator(held_out[0]), other, reference)
    bigger = make_shapes(50, 32, seed=0)[0]
    with pytest.raises(ValueError, match="images"):
        score(ReplayGenerator(bigger), clf, reference)


def test_rotation_extractor_scores_without_classes(real, held_out):
    rot = train_rotation_extractor(real[0], epochs=1, seed=0)
    ref = build_reference(rot, real[0], features_size=N)
    assert ref.kind == "rotation" and ref.num_classes is None
    s = score(ReplayGenerator(held_out[0]), rot, ref)
    assert s.classes_covered is None and s.num_classes is None and s.extractor == "rotation"
    assert s.fd < score(NoiseGenerator(), rot, ref).fd
