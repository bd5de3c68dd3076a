"""Scoring translation checkpoints on the held-out split: PSNR and SSIM against hand-computed
values and their known properties; a real pix2pix run on shapes-edges scores clearly better
than its untrained start and than copying the input, the same numbers twice; an unpaired
checkpoint is scored in both directions; the extractors load from their cache directory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core.data.pairs import Domain, PairDataset, load_pairs, validation_names
from gan_core.metrics import build_reference, dataset_fingerprint, save_extractor, save_reference
from gan_core.metrics.scorer import EXTRACTOR_FILE, REFERENCE_FILE
from gan_core.metrics.translation import (
    PSNR_CAP,
    TranslationScorer,
    domain_dataset,
    psnr,
    ssim,
    target_sides,
    translation_scorer_keys,
)
from gan_core.training import train
from gan_core.translation.config import PairedConfig, TranslationConfig, UnpairedConfig
from gan_core.translation.run import resolve_translation_config
from gan_core.translation.state import PairBatcher, TranslationState

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/gan_core/conftest.py

TINY = {"g_width": 8, "d_width": 8, "device": "cpu", "batch_size": 4}
EXTRACTOR_EPOCHS = 2  # a few steps: enough to tell models apart, cheap enough for a test
PIXEL_KEYS = ("l1", "psnr", "ssim")


# --------------------------------------------------------------------------- PSNR


def test_psnr_against_hand_computed_values():
    x = torch.zeros(3, 3, 16, 16, dtype=torch.uint8)
    y = x.clone()
    y[0] += 10  # every pixel off by 10: MSE 100
    y[1, :, :8] = 16  # half the pixels off by 16: MSE 128
    got = psnr(x, y)
    assert got[0].item() == pytest.approx(20 * math.log10(255 / 10))  # 28.1308 dB
    assert got[0].item() == pytest.approx(28.1308, abs=1e-4)
    assert got[1].item() == pytest.approx(10 * math.log10(255**2 / 128))  # 27.0616 dB
    assert got[2].item() == PSNR_CAP  # identical: capped, not inf
    assert psnr(y, x).tolist() == got.tolist()


# --------------------------------------------------------------------------- SSIM


def test_ssim_of_identical_images_is_one():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)


def test_ssim_of_flat_images_is_the_luminance_term():
    # No variance anywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (the structure term is C2/C2).
    a, b = 100.0, 140.0
    x = torch.full((1, 1, 16, 16), a)
    y = torch.full((1, 1, 16, 16), b)
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.94596, abs=1e-5)  # 28006.50 / 29606.50


def test_ssim_of_one_window_equals_the_formula():
    # An 11x11 image has one window position: SSIM is the formula on Gaussian-weighted
    # means, variances and covariance, written here directly (no convolution).
    torch.manual_seed(1)
    x = torch.randint(0, 256, (1, 1, 11, 11)).double()
    y = (x * 0.5 + torch.randint(0, 100, (1, 1, 11, 11))).double()
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y).item() == pytest.approx(expected.item(), rel=1e-9)
    assert 0.1 < expected.item() < 0.9  # a case that tests something


def test_ssim_is_symmetric_per_channel_and_falls_with_noise():
    torch.manual_seed(2)
    x = torch.randint(0, 256, (1, 3, 32, 32)).double()
    noisy = [(x + s * torch.randn_like(x)).clamp(0, 255) for s in (5, 20, 60, 120)]
    scores = [ssim(x, n).item() for n in noisy]
    assert scores == sorted(scores, reverse=True) and scores[0] < 1.0
    assert ssim(x, noisy[1]).item() == pytest.approx(ssim(noisy[1], x).item(), rel=1e-12)
    # per channel, then the mean: channels of a colour image score as three grey images
    per_channel = [ssim(x[:, i : i + 1], noisy[1][:, i : i + 1]).item() for i in range(3)]
    assert ssim(x, noisy[1]).item() == pytest.approx(sum(per_channel) / 3, rel=1e-12)


def test_ssim_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.zeros(1, 1, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="sides >= 11"):
        ssim(torch.zeros(1, 1, 10, 16), torch.zeros(1, 1, 10, 16))


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def edges() -> PairDataset:
    """1,000 shapes-edges pairs at 32px: 950 to train on, 50 held out."""
    return load_pairs("shapes-edges", image_size=32, max_items=1000)


@pytest.fixture(scope="module")
def edges_scorer(edges) -> TranslationScorer:
    return TranslationScorer.fit(edges, epochs=EXTRACTOR_EPOCHS)


def untrained_checkpoint(config: TranslationConfig, data: PairDataset, run_dir: Path) -> Path:
    """A checkpoint of a run's initial weights, as the run itself would write it (step 0)."""
    config = resolve_translation_config(config, data)
    state = TranslationState(config, torch.device("cpu"))
    batcher = PairBatcher(data, config.batch_size, seed=config.seed, device=torch.device("cpu"))
    return state.save(run_dir, batcher, {}).path


@pytest.fixture(scope="module")
def paired_checkpoints(edges, tmp_path_factory) -> tuple[Path, Path]:
    """(untrained, trained for 300 steps) checkpoints of a tiny pix2pix with an EMA."""
    config = PairedConfig(steps=300, checkpoint_every=300, ema_decay=0.9, **TINY)
    root = tmp_path_factory.mktemp("paired")
    untrained = untrained_checkpoint(config, edges, root / "untrained")
    result = train(config, root / "trained", dataset=edges, resume=False)
    assert result.checkpoint is not None
    return untrained, result.checkpoint


def test_a_trained_pix2pix_scores_better_than_its_start_and_than_copying(
    edges_scorer, paired_checkpoints
):
    untrained, trained = (edges_scorer.score(p) for p in paired_checkpoints)
    for s in (untrained, trained):
        assert s["kind"] == "paired" and s["extractor"] == "rotation"
        assert s["num_inputs"] == {"a2b": 50}
        assert set(s["ema"]) == set(s["raw"]) == {"fd", "kid", "kid_std", *PIXEL_KEYS}
        assert s["fd"] == s[s["preferred"]]["fd"] == min(s["ema"]["fd"], s["raw"]["fd"])
        assert all(s[k] == s[s["preferred"]][k] for k in s["raw"])
        assert "fd_b2a" not in s
    # clearly better in the target domain's features, and pixel by pixel
    assert trained["fd"] < untrained["fd"] / 5
    assert trained["kid"] < untrained["kid"] / 5
    assert trained["l1"] < untrained["l1"] * 0.6
    assert trained["psnr"] > untrained["psnr"] + 3
    assert trained["ssim"] > untrained["ssim"] + 0.1
    # the held-out real targets (the floor) beat both; copying the input loses to the model
    base = trained["baseline"]
    assert base["fd"] < trained["fd"] and base["kid"] < trained["kid"]
    assert trained["l1"] < base["l1"] < untrained["l1"]
    assert trained["psnr"] > base["psnr"] and trained["ssim"] > base["ssim"]


def test_scores_are_deterministic(edges, edges_scorer, paired_checkpoints):
    _, trained = paired_checkpoints
    first, second = edges_scorer.score(trained), edges_scorer.score(trained)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    again = TranslationScorer(edges, edges_scorer.domains)  # a new scorer, the same extractor
    third = again.score(trained)
    third.pop("seconds")
    assert third == first


def test_the_extractors_load_from_their_cache_directory(
    edges, edges_scorer, paired_checkpoints, tmp_path
):
    # what build_scorer writes, per target domain, under the domain's content key
    keys = translation_scorer_keys(edges)
    assert list(keys) == list(target_sides(edges)) == ["b"]
    extractor, reference = edges_scorer.domains["b"]
    directory = tmp_path / keys["b"]
    directory.mkdir()
    fingerprint = reference.dataset_fingerprint
    assert fingerprint is not None
    save_extractor(
        extractor, directory / EXTRACTOR_FILE, metadata={"dataset_fingerprint": fingerprint}
    )
    save_reference(reference, directory / REFERENCE_FILE)
    lines: list[str] = []
    loaded = TranslationScorer.from_directory(tmp_path, edges, log=lines.append)
    assert lines == []  # loaded, not rebuilt
    a, b = loaded.score(paired_checkpoints[1]), edges_scorer.score(paired_checkpoints[1])
    assert a["fd"] == b["fd"] and a["ssim"] == b["ssim"]
    # the key follows the domain's training images, not the dataset's name
    assert keys["b"].endswith("-rotation-v2-3x32x32")
    assert domain_dataset(edges, "b").images.shape == (950, 3, 32, 32)


def test_a_scorer_needs_each_target_domains_extractor(edges, edges_scorer):
    with pytest.raises(ValueError, match="domain B"):
        TranslationScorer(edges, {})
    extractor, reference = edges_scorer.domains["b"]
    wrong = TranslationScorer.fit(edges, epochs=1).domains["b"][1]  # another extractor's
    assert wrong.extractor_digest != reference.extractor_digest
    with pytest.raises(ValueError, match="another extractor"):
        TranslationScorer(edges, {"b": (extractor, wrong)})
    held_out = edges.b.split()[1]  # the right extractor, a reference of other images
    elsewhere = build_reference(
        extractor, held_out, dataset_fingerprint=dataset_fingerprint(held_out, None)
    )
    with pytest.raises(ValueError, match="other images"):
        TranslationScorer(edges, {"b": (extractor, elsewhere)})


# --------------------------------------------------------------------------- unpaired


def unpaired_from(data: PairDataset) -> PairDataset:
    """Two domains without pairs: A's first half against B's second (no stem in common)."""
    n = len(data.a) // 2

    def domain(images: torch.Tensor, prefix: str) -> Domain:
        names = tuple(f"{prefix}{i:05d}" for i in range(images.shape[0]))
        return Domain(images, names, validation_names(names, 0, prefix), 32)

    return PairDataset(
        "edges-unpaired", domain(data.a.images[:n], "a"), domain(data.b.images[n:], "b"), False
    )


def test_an_unpaired_checkpoint_is_scored_both_ways(edges, paired_checkpoints, tmp_path):
    data = unpaired_from(edges)
    scorer = TranslationScorer.fit(data, epochs=EXTRACTOR_EPOCHS)
    assert set(scorer.domains) == {"a", "b"}
    config = UnpairedConfig(steps=10, **TINY)
    s = scorer.score(untrained_checkpoint(config, data, tmp_path / "run"))
    assert s["kind"] == "unpaired" and s["preferred"] == "raw" and "ema" not in s
    assert s["num_inputs"] == {"a2b": 25, "b2a": 25}
    assert set(s["raw"]) == {"fd", "kid", "kid_std", "fd_b2a", "kid_b2a", "kid_std_b2a"}
    assert set(s["baseline"]) == set(s["raw"])  # no pixel metrics without pairs
    assert s["fd_b2a"] > s["baseline"]["fd_b2a"] and s["fd"] > s["baseline"]["fd"]
    # each direction in its own target domain's features: B's extractor is not A's
    assert scorer.domains["a"][0].channels == 1 and scorer.domains["b"][0].channels == 3
    with pytest.raises(ValueError, match="paired checkpoint, but unpaired data"):
        scorer.score(paired_checkpoints[0])
    with pytest.raises(ckpt.CheckpointError):
        scorer.score(tmp_path)  # not a checkpoint at all
