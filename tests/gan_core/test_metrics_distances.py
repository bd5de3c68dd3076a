"""KID and k-NN precision/recall on known distributions, against direct implementations."""

from __future__ import annotations

import statistics

import pytest
import torch

from gan_core.metrics import kid, kid_subset_indices, knn_radii, mean_cov, precision_recall


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def direct_mmd2(x: torch.Tensor, y: torch.Tensor, *, biased: bool = False) -> float:
    """MMD^2 with k(a,b) = (a.b/d + 1)^3 by explicit pair sums (float64), O(n^2) memory."""
    x, y = x.double(), y.double()
    d, m, n = x.shape[1], x.shape[0], y.shape[0]

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / d + 1) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if biased:  # the V-statistic: diagonal terms included, which bias it upwards
        return (kxx.mean() + kyy.mean() - 2 * kxy.mean()).item()
    off_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    off_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return (off_x + off_y - 2 * kxy.mean()).item()


def test_kid_is_unbiased_for_equal_distributions():
    # Many independent pairs of samples of one Gaussian: the unbiased estimator averages to 0,
    # while the biased one (diagonal terms kept) is clearly positive at this sample size.
    d, n, pairs = 16, 40, 300
    unbiased, biased = [], []
    for i in range(pairs):
        x, y = gaussian(n, d, 2 * i), gaussian(n, d, 2 * i + 1)
        unbiased.append(kid(x, y, subset_size=n, subsets=1)[0])
        biased.append(direct_mmd2(x, y, biased=True))
    mean_u, sem_u = statistics.fmean(unbiased), statistics.stdev(unbiased) / pairs**0.5
    assert abs(mean_u) < 4 * sem_u, (mean_u, sem_u)
    assert statistics.fmean(biased) > 20 * 4 * sem_u, (statistics.fmean(biased), sem_u)
    # different distributions: clearly positive, many standard errors from 0
    shifted = [
        kid(gaussian(n, d, 9000 + i), gaussian(n, d, 9500 + i, 0.5), subset_size=n, subsets=1)[0]
        for i in range(30)
    ]
    assert statistics.fmean(shifted) > 20 * 4 * sem_u, statistics.fmean(shifted)


def test_kid_matches_direct_computation_per_subset():
    x, y = gaussian(70, 8, 1), gaussian(50, 8, 2, shift=0.3)
    size, subsets, seed = 30, 7, 5
    idx_x, idx_y = kid_subset_indices(70, 50, size, subsets, seed)
    assert idx_x.shape == idx_y.shape == (subsets, size)
    assert all(len(set(row.tolist())) == size for row in idx_x)  # without replacement
    expected = [direct_mmd2(x[ix], y[iy]) for ix, iy in zip(idx_x, idx_y, strict=True)]
    mean, std = kid(x, y, subset_size=size, subsets=subsets, seed=seed)
    assert mean == pytest.approx(statistics.fmean(expected), rel=1e-9, abs=1e-12)
    assert std == pytest.approx(statistics.pstdev(expected), rel=1e-7, abs=1e-12)
    # blocked rows give the same sums; another seed gives other subsets
    assert kid(x, y, subset_size=size, subsets=subsets, seed=seed, block=7) == pytest.approx(
        (mean, std)
    )
    assert kid(x, y, subset_size=size, subsets=subsets, seed=seed + 1)[0] != mean
    # subset size is capped at the smaller set; a single subset has std 0
    full = kid(x, y, subset_size=10_000, subsets=1)
    assert full[1] == 0.0
    assert full[0] == pytest.approx(
        direct_mmd2(x[kid_subset_indices(70, 50, 50, 1, 0)[0][0]], y), rel=1e-9
    )


def test_kid_agrees_with_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    x, y = gaussian(64, 12, 3).relu(), gaussian(64, 12, 4, shift=0.2).relu()
    # whole sets as the one subset, so both draw "the same" subset whatever their RNGs
    theirs = kid_features_to_metric(x, y, kid_subsets=1, kid_subset_size=64, verbose=False)
    ours = kid(x, y, subset_size=64, subsets=1)
    assert ours[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError):
        kid(torch.zeros(10, 4), torch.zeros(10, 5))
    with pytest.raises(ValueError):
        kid(torch.zeros(1, 4), torch.zeros(10, 4))


def test_knn_radii_match_sorting():
    p = gaussian(57, 5, 8)
    dist2 = torch.cdist(p.double(), p.double()) ** 2
    for k in (1, 3):
        expected = dist2.sort(dim=1).values[:, k]  # column 0 is the point itself
        torch.testing.assert_close(knn_radii(p, k, block=10), expected)
    with pytest.raises(ValueError):
        knn_radii(p, 57)


def test_precision_recall_identical_sets():
    x = gaussian(300, 8, 0)
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_precision_recall_mode_dropping():
    # Real data: 4 well-separated clusters. Fakes: as many points, from only 2 of them. In 2-D
    # the k-NN balls cover a cluster well, so a second real sample scores close to 1 / 1.
    d, per_mode = 2, 200
    centres = torch.zeros(4, d)
    centres[:, 0] = torch.tensor([0.0, 20.0, 40.0, 60.0])
    real = torch.cat([gaussian(per_mode, d, 10 + i) + centres[i] for i in range(4)])
    other_real = torch.cat([gaussian(per_mode, d, 30 + i) + centres[i] for i in range(4)])
    fake = torch.cat([gaussian(2 * per_mode, d, 20 + i) + centres[i] for i in range(2)])
    p_real, r_real = precision_recall(real, other_real)
    assert p_real > 0.9 and r_real > 0.9, (p_real, r_real)
    precision, recall = precision_recall(real, fake, block=64)
    assert precision > 0.9 and abs(precision - p_real) < 0.05, (precision, p_real)
    assert 0.4 < recall <= 0.5, recall  # ~ the fraction of modes covered
    # the roles are not symmetric: swapping the sets swaps the numbers
    assert precision_recall(fake, real) == (recall, precision)


def test_precision_recall_far_fakes_and_blocking():
    real = gaussian(200, 8, 1)
    assert precision_recall(real, gaussian(200, 8, 2, shift=100.0)) == (0.0, 0.0)
    fake = gaussian(150, 8, 3, shift=0.7)
    p, r = precision_recall(real, fake, k=5)
    assert 0.0 < p < 1.0 and 0.0 < r < 1.0
    assert precision_recall(real, fake, k=5, block=13) == (p, r)


def test_precision_recall_agrees_with_torch_fidelity():
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    real, fake = gaussian(120, 6, 4), gaussian(120, 6, 5, shift=0.5)
    # torch-fidelity's convention: features_1 generated, features_2 real
    theirs = calculate_precision_recall_full(fake, real, neighborhood=3)
    ours = precision_recall(real, fake, k=3)
    assert ours == pytest.approx(theirs, abs=1.5 / 120)  # at most one point on a ball's rim


def test_mean_cov():
    x = gaussian(500, 3, 6)
    mu, sigma = mean_cov(x)
    assert mu.dtype == sigma.dtype == torch.float64 and sigma.shape == (3, 3)
    torch.testing.assert_close(sigma, torch.cov(x.double().T))
    with pytest.raises(ValueError):
        mean_cov(x[:1])
