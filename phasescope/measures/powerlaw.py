"""Weight-matrix spectra: empirical spectral density, Marchenko–Pastur edges, power-law tail fit.

The empirical spectral density (ESD) of a weight matrix ``W`` with ``N ≥ M`` (transposed if not) is the set
of eigenvalues of the correlation matrix ``WᵀW / N``, i.e. ``σ² / N`` for the singular values ``σ`` of
``W``. For i.i.d. entries of variance ``v`` it fills the Marchenko–Pastur bulk
``[v(1 - √(M/N))², v(1 + √(M/N))²]``; eigenvalues above the upper edge are "spikes" (learned structure),
and a heavy power-law tail ``p(λ) ∝ λ^-α`` is what WeightWatcher reads as a sign of training
(α ∈ [2, 6] well trained, α < 2 over-fitted). See docs/measures.md, section "Spectra".
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["marchenko_pastur_edges", "power_law_fit", "weight_esd"]

# Eigenvalues below this fraction of the largest are numerically zero (rank deficiency) and are left
# out of the power-law fit: their logarithms would dominate the MLE.
_ZERO_EIG_RTOL = 1e-10
# Upper bound on the elements of one chunk of the KS scan (candidates × tail points), ~32 MB in float64.
_KS_CHUNK_ELEMENTS = 1 << 22


def weight_esd(W: Float[Tensor, "*batch rows cols"]) -> Float[Tensor, "*batch m"]:
    """Eigenvalues of the correlation matrix ``WᵀW / N`` of a weight matrix, largest first.

    The matrix is oriented so that ``N ≥ M`` (``W`` is transposed when it has fewer rows than columns),
    so there are ``M = min(rows, cols)`` eigenvalues, equal to ``σ² / N`` for the singular values ``σ``.
    Computed from singular values in float64 (no ``WᵀW`` is formed, which would square the condition
    number).

    Args:
        W: weight matrices, with any leading batch axes (e.g. one per layer).

    Returns:
        The eigenvalues, float64, in descending order, ``[*batch, min(rows, cols)]``. Unit: squared weight
        units (the element variance of a random matrix sets the bulk's scale).
    """
    n = max(W.shape[-2], W.shape[-1])
    W = W.to(torch.float64)
    if W.shape[-2] < W.shape[-1]:
        # Same singular values; LAPACK (MKL) takes 4-7x longer on a wide matrix than on its tall
        # transpose (768 x 50257: 12 s against 3 s on one core).
        W = W.transpose(-1, -2)
    sigma = torch.linalg.svdvals(W)  # [*batch, M], descending
    return sigma.square() / n


def marchenko_pastur_edges(n_rows: int, n_cols: int, variance: float) -> tuple[float, float]:
    """Edges of the Marchenko–Pastur bulk for the ESD of an ``n_rows × n_cols`` random matrix.

    With ``N = max(n_rows, n_cols)``, ``M = min(...)`` and aspect ratio ``q = M / N ≤ 1``, the eigenvalues
    of ``WᵀW / N`` for i.i.d. entries of variance ``variance`` fill ``[v(1 - √q)², v(1 + √q)²]`` as
    ``N → ∞`` (as :func:`weight_esd` orients the matrix).

    Args:
        n_rows: number of rows of the weight matrix.
        n_cols: number of columns.
        variance: element variance of the matrix (squared weight units).

    Returns:
        ``(lambda_minus, lambda_plus)``, the lower and upper bulk edges.

    >>> marchenko_pastur_edges(400, 100, 1.0)
    (0.25, 2.25)
    """
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"matrix shape must be positive, got {n_rows} × {n_cols}")
    q = min(n_rows, n_cols) / max(n_rows, n_cols)
    root = math.sqrt(q)
    return variance * (1.0 - root) ** 2, variance * (1.0 + root) ** 2


def power_law_fit(
    eigs: Float[Tensor, " n"], min_tail: int = 10, max_candidates: int | None = 1000
) -> dict[str, float]:
    """Fit a power-law tail ``p(λ) ∝ λ^-α`` (λ ≥ λ_min) to a set of eigenvalues.

    Clauset, Shalizi & Newman (2009), as WeightWatcher and the ``powerlaw`` package do it: for every
    candidate ``λ_min`` (each distinct value leaving at least ``min_tail`` points in the tail) the
    continuous maximum-likelihood exponent is ``α = 1 + n / Σ ln(λ_i / λ_min)`` over the ``n`` tail
    points, and the Kolmogorov–Smirnov distance between the tail's empirical CDF and the fitted
    ``F(λ) = 1 - (λ / λ_min)^(1-α)`` is computed; the candidate with the smallest distance wins. The
    standard error is ``(α - 1) / √n``. The scan sorts once and uses suffix sums of ``ln λ``, so every
    candidate's α costs O(1); the KS distances are computed in vectorised chunks, O(n) per candidate.

    Eigenvalues that are numerically zero (below ``1e-10`` of the largest) are dropped first.

    Args:
        eigs: eigenvalues (any order), e.g. from :func:`weight_esd`.
        min_tail: the fewest tail points a candidate ``λ_min`` may leave.
        max_candidates: scan at most this many candidates, evenly spaced in rank (the KS scan costs
            O(candidates × n)); ``None`` scans every one. The default scans all of any weight matrix
            up to 1000 eigenvalues exactly.

    Returns:
        ``alpha`` (dimensionless density exponent), ``alpha_se`` (its standard error), ``xmin``
        (``λ_min``, the units of ``eigs``), ``n_tail`` (points in the tail) and ``ks_distance``
        (in [0, 1]). When no candidate is valid (fewer than ``min_tail`` distinct positive values),
        every float is NaN and ``n_tail`` is 0.
    """
    x = eigs.detach().reshape(-1).to(torch.float64)
    x = x[torch.isfinite(x)]
    if x.numel():
        x = x[x > _ZERO_EIG_RTOL * x.max().clamp_min(0.0)]
    x, _ = torch.sort(x)  # ascending
    n = x.numel()
    nan = float("nan")
    failed = {"alpha": nan, "alpha_se": nan, "xmin": nan, "n_tail": 0, "ks_distance": nan}
    if n < min_tail or n == 0:
        return failed

    logx = torch.log(x)
    # suffix[i] = Σ_{j ≥ i} ln x_j
    suffix = torch.flip(torch.cumsum(torch.flip(logx, (0,)), 0), (0,))
    idx = torch.arange(n, device=x.device)
    tail_n = (n - idx).to(torch.float64)  # tail size for λ_min = x[i]
    log_sum = suffix - tail_n * logx  # Σ_{j ≥ i} ln(x_j / x_i) ≥ 0
    distinct = torch.ones(n, dtype=torch.bool, device=x.device)
    distinct[1:] = x[1:] > x[:-1]  # a tie's first occurrence only: the tail is then all of λ ≥ λ_min
    valid = distinct & (tail_n >= min_tail) & (log_sum > 0)
    cand = idx[valid]
    if cand.numel() == 0:
        return failed
    if max_candidates is not None and cand.numel() > max_candidates:
        # Evenly spaced in rank, i.e. at quantiles of the data; the ends are kept.
        pick = torch.linspace(0, cand.numel() - 1, max_candidates, dtype=torch.float64, device=x.device)
        pick = pick.round().long()
        cand = cand[pick.unique()]
    alpha = 1.0 + tail_n[cand] / log_sum[cand]
    ks = _ks_distances(x, logx, cand, alpha)

    best = int(torch.argmin(ks))
    a, m = float(alpha[best]), int(tail_n[cand[best]])
    return {
        "alpha": a,
        "alpha_se": (a - 1.0) / math.sqrt(m),
        "xmin": float(x[cand[best]]),
        "n_tail": m,
        "ks_distance": float(ks[best]),
    }


def _ks_distances(
    x: Float[Tensor, " n"], logx: Float[Tensor, " n"], cand: Tensor, alpha: Float[Tensor, " c"]
) -> Float[Tensor, " c"]:
    """KS distance of each candidate's tail ``x[cand[c]:]`` to its fitted power law; ``x`` ascending."""
    n = x.numel()
    out = torch.empty(cand.numel(), dtype=torch.float64, device=x.device)
    start = 0
    while start < cand.numel():
        # Candidates ascend, so the chunk's first one has the longest tail: every candidate's tail is a
        # suffix of x[first:], and points before a candidate's own start are masked.
        first = int(cand[start])
        size = max(1, _KS_CHUNK_ELEMENTS // (n - first))
        c = cand[start : start + size]
        a = alpha[start : start + size]
        rank = (
            torch.arange(first, n, device=x.device)[None, :] - c[:, None]
        )  # (C, K) k-th point of each tail, < 0 before it
        m = (n - c).to(torch.float64)[:, None]  # (C, 1) tail sizes
        # Model CDF F(x) = 1 - (x / x_min)^(1 - α), in log form.
        model = torch.exp((1.0 - a)[:, None] * (logx[first:][None, :] - logx[c][:, None]))
        model.neg_().add_(1.0)
        k = rank.to(torch.float64)
        # Two-sided KS: the empirical CDF jumps from k/m to (k+1)/m at the k-th point.
        gap = torch.maximum((k + 1.0).div_(m).sub_(model), model.sub_(k.div_(m)))
        gap.masked_fill_(rank < 0, float("-inf"))
        out[start : start + size] = gap.amax(dim=1)
        start += size
    return out
