"""Distances between sets of feature vectors: Fréchet distance, KID, k-NN precision/recall.

Pure functions over (N, D) tensors, computed on the CPU in float64 where sums of many terms
would lose precision in float32; pairwise quantities are computed in row blocks so memory
stays O(block * N) rather than O(N^2).
"""

from __future__ import annotations

import statistics

import torch
from torch import Tensor

DEFAULT_BLOCK = 1024  # rows of a pairwise matrix held at once: 1024 x 5000 float64 = 40 MB


def mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of (N, D) features, float64; N >= 2."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got {tuple(features.shape)}")
    f = features.detach().double().cpu()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sym(m: Tensor) -> Tensor:
    return (m + m.T) / 2


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians, in float64."""
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).cpu() for m in (mu1, mu2))
    s1, s2 = (_sym(torch.as_tensor(s, dtype=torch.float64).cpu()) for s in (sigma1, sigma2))
    # (S1 S2)^{1/2} has the same eigenvalues as the symmetric PSD S1^{1/2} S2 S1^{1/2}, so its trace
    # needs only eigh/eigvalsh: no scipy, no complex parts from a non-symmetric sqrtm. With
    # S1 = V W V^T that matrix is similar to W^{1/2} V^T S2 V W^{1/2}, and S1's null directions
    # add nothing: keeping only the r columns with w > 0 makes a rank-r S1 (fewer samples than
    # dimensions, e.g. 2048-d Inception features of a few images) cost one eigh and O(D^2 r).
    w, v = torch.linalg.eigh(s1)
    keep = w > w.abs().max() * s1.shape[0] * torch.finfo(torch.float64).eps
    v_r, sqrt_w = v[:, keep], w[keep].sqrt()
    m = sqrt_w[:, None] * (v_r.T @ s2 @ v_r) * sqrt_w[None, :]
    tr_covmean = torch.linalg.eigvalsh(_sym(m)).clamp(min=0).sqrt().sum() if m.numel() else 0.0
    diff = mu1 - mu2
    fd = diff.dot(diff) + s1.trace() + s2.trace() - 2 * tr_covmean
    return max(float(fd), 0.0)


def _check_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {tuple(a.shape)}, {tuple(b.shape)}")
    return a.detach().double().cpu(), b.detach().double().cpu()


def _subset_sums(a: Tensor, b: Tensor, sa: Tensor, sb: Tensor, block: int) -> Tensor:
    """For each subset pair s: sum over i in A_s, j in B_s of k(a_i, b_j), k the KID kernel.

    sa (Na, S) and sb (Nb, S) are 0/1 subset indicators, so the sum is sa[:, s]^T K sb[:, s]:
    one pass over K in row blocks serves every subset, instead of S separate m x m matrices.
    """
    d = a.shape[1]
    total = torch.zeros(sa.shape[1], dtype=torch.float64)
    for i in range(0, a.shape[0], block):
        k = (a[i : i + block] @ b.T / d + 1.0) ** 3  # (block, Nb): (x.y/d + 1)^3
        total += (sa[i : i + block] * (k @ sb)).sum(0)
    return total


def kid_subset_indices(
    n_real: int, n_fake: int, subset_size: int, subsets: int, seed: int
) -> tuple[Tensor, Tensor]:
    """The subsets `kid` draws: (subsets, subset_size) real and fake indices, rows distinct."""
    g = torch.Generator().manual_seed(seed)
    rows_real, rows_fake = [], []
    for _ in range(subsets):
        rows_real.append(torch.randperm(n_real, generator=g)[:subset_size])
        rows_fake.append(torch.randperm(n_fake, generator=g)[:subset_size])
    return torch.stack(rows_real), torch.stack(rows_fake)


def _indicator(idx: Tensor, n: int) -> Tensor:
    """(subsets, m) indices -> (n, subsets) float64 0/1 matrix."""
    out = torch.zeros(n, idx.shape[0], dtype=torch.float64)
    out.scatter_(0, idx.T, 1.0)
    return out


def kid(
    real: Tensor,
    fake: Tensor,
    *,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
    block: int = DEFAULT_BLOCK,
) -> tuple[float, float]:
    """Kernel Inception Distance of two (N, D) feature sets: (mean, std) over random subsets.

    Per subset pair of m real and m fake vectors, the unbiased MMD^2 estimator with the cubic
    polynomial kernel k(x, y) = (x.y/D + 1)^3 (Binkowski et al. 2018; as torch-fidelity):

        sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
            - 2 sum_{i,j} k(x_i,y_j) / m^2

    It can be slightly negative for equal distributions. ``subset_size`` is capped at the
    smaller set's size; std is the population std over subsets (ddof=0, as torch-fidelity).
    """
    x, y = _check_pair(real, fake)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs subsets >= 1 of >= 2 vectors each, got {subsets} of {m}")
    idx_x, idx_y = kid_subset_indices(x.shape[0], y.shape[0], m, subsets, seed)
    sx, sy = _indicator(idx_x, x.shape[0]), _indicator(idx_y, y.shape[0])
    diag_x = ((x * x).sum(1) / x.shape[1] + 1.0) ** 3  # k(x_i, x_i)
    diag_y = ((y * y).sum(1) / y.shape[1] + 1.0) ** 3
    kxx = _subset_sums(x, x, sx, sx, block) - diag_x @ sx
    kyy = _subset_sums(y, y, sy, sy, block) - diag_y @ sy
    kxy = _subset_sums(x, y, sx, sy, block)
    mmd2 = (kxx + kyy) / (m * (m - 1)) - 2 * kxy / (m * m)
    values = mmd2.tolist()
    return statistics.fmean(values), statistics.pstdev(values)


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances (Na, Nb), float64, clamped at 0 against rounding."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T).clamp_(min=0)


def knn_radii(points: Tensor, k: int = 3, block: int = DEFAULT_BLOCK) -> Tensor:
    """Squared distance from each point to its k-th nearest other point, (N,) float64."""
    p = points.detach().double().cpu()
    if not 1 <= k < p.shape[0]:
        raise ValueError(f"k must be in [1, {p.shape[0] - 1}] for {p.shape[0]} points, got {k}")
    # k + 1: each point's nearest neighbour at distance 0 is itself.
    return torch.cat(
        [
            _sq_dists(p[i : i + block], p).kthvalue(k + 1, dim=1).values
            for i in range(0, len(p), block)
        ]
    )


def _inside_any_ball(queries: Tensor, centres: Tensor, radii: Tensor, block: int) -> Tensor:
    """(Nq,) bool: is each query within radii[j] of some centre j (squared distances)."""
    return torch.cat(
        [
            (_sq_dists(queries[i : i + block], centres) <= radii).any(1)
            for i in range(0, len(queries), block)
        ]
    )


def precision_recall(
    real: Tensor, fake: Tensor, *, k: int = 3, block: int = DEFAULT_BLOCK
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

    precision: fraction of fakes inside some real vector's k-NN ball (are fakes realistic?);
    recall: fraction of reals inside some fake vector's k-NN ball (is the data covered?).
    The balls' radii depend on each set's density, so compare sets of equal size.
    """
    x, y = _check_pair(real, fake)
    precision = _inside_any_ball(y, x, knn_radii(x, k, block), block).double().mean().item()
    recall = _inside_any_ball(x, y, knn_radii(y, k, block), block).double().mean().item()
    return precision, recall
