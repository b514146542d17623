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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "ALPHA_BOOT",
    "ALPHA_BOOT_BUDGET",
    "ALPHA_BOOT_CANDIDATES",
    "alpha_bootstrap",
    "gram_eigenvalues",
    "gram_matrix",
    "marchenko_pastur_edges",
    "power_law_fit",
    "weight_esd",
]

# Eigenvalues below this fraction of the largest are numerically zero (rank deficiency) and are left
# out of the power-law fit: their logarithms would dominate the MLE.
_ZERO_EIG_RTOL = 1e-10
# Upper bound on the elements of one chunk of the KS scan (candidates × tail points), ~32 MB in float64.
_KS_CHUNK_ELEMENTS = 1 << 22
# The bootstrap of α (alpha_bootstrap): resamples, λ_min candidates per resample, and a bound on the
# (resample × candidate × eigenvalue) elements of its KS scans (2**20: a few ms on one core), which
# lowers the resamples on long spectra: 100 up to 327 eigenvalues, 42 for 768, 20 (the floor) from 1639.
ALPHA_BOOT = 100
ALPHA_BOOT_CANDIDATES = 32
ALPHA_BOOT_BUDGET = 1 << 20
# Elements of one float64 slab of a Gram product (~32 MB): a 50k-vocabulary embedding is cast slab by slab.
_GRAM_SLAB_ELEMENTS = 1 << 22


def weight_esd(W: Float[Tensor, "*batch rows cols"]) -> Float[Tensor, "*batch m"]:
    """Eigenvalues of the correlation matrix ``XᵀX / N`` of a weight matrix, largest first.

    ``X`` is ``W`` oriented so that ``N ≥ M`` (``W`` is transposed when it has fewer rows than columns),
    so there are ``M = min(rows, cols)`` eigenvalues, equal to ``σ² / N`` for the singular values ``σ``
    of ``W``. Computed by the Gram route (:func:`gram_matrix`, then :func:`gram_eigenvalues`): in float64,
    exact to ``~M·ε·λ_max`` in absolute terms (docs/measures.md, "Weight matrices", for why that does not
    touch the MP edges or the tail fit).

    Args:
        W: weight matrices, with any leading batch axes (e.g. one per layer).

    Returns:
        The eigenvalues, float64, in descending order, ``[*batch, min(rows, cols)]``, ``≥ 0``. Unit:
        squared weight units (the element variance of a random matrix sets the bulk's scale).
    """
    gram, _ = gram_matrix(W)
    return gram_eigenvalues(gram, max(W.shape[-2], W.shape[-1]))


def gram_matrix(
    W: Float[Tensor, "*batch rows cols"], transpose: bool | None = None
) -> tuple[Float[Tensor, "*batch m m"], Float[Tensor, " *batch"]]:
    """The float64 Gram matrix ``XᵀX`` of each matrix, and the float64 sum of its elements.

    ``X`` is ``W`` (``transpose=False``) or ``Wᵀ`` (``True``); by default the tall orientation
    (``Wᵀ`` when ``W`` has fewer rows than columns, as :func:`weight_esd` orients it). The product is
    accumulated over slabs of the long axis, each cast to float64 on its own, so a 50k-row embedding
    never exists in float64 as a whole; on the CPU each slab is one symmetric rank-k update (BLAS
    ``syrk``, half the flops of a general product) run with torch's thread count.

    Args:
        W: matrices with any leading batch axes.
        transpose: take ``X = Wᵀ``; None picks the tall orientation (no transpose for a square matrix).

    Returns:
        ``(gram, total)``: ``gram`` ``[*batch, m, m]`` with ``m`` the column count of ``X``, and
        ``total`` ``[*batch]`` the sum of all elements of each matrix (for its mean), both float64, on
        ``W``'s device.
    """
    rows, cols = W.shape[-2], W.shape[-1]
    if transpose is None:
        transpose = rows < cols
    batch = W.shape[:-2]
    flat = W.detach().reshape(-1, rows, cols)
    m = rows if transpose else cols
    step = max(1, _GRAM_SLAB_ELEMENTS // m)
    gram_fn = _gram_numpy if flat.device.type == "cpu" else _gram_torch
    grams, totals = gram_fn(flat, transpose, step)
    return grams.reshape(*batch, m, m), totals.reshape(batch)


def _gram_torch(flat: Tensor, transpose: bool, step: int) -> tuple[Tensor, Tensor]:
    """:func:`gram_matrix` with torch's batched products (any device; the GPU path)."""
    count, rows, cols = flat.shape
    m, n = (rows, cols) if transpose else (cols, rows)
    grams = torch.zeros(count, m, m, dtype=torch.float64, device=flat.device)
    totals = torch.zeros(count, dtype=torch.float64, device=flat.device)
    for start in range(0, n, step):
        # (B, k, m): a slab of X's rows, cast on its own
        slab = flat[:, :, start : start + step].mT if transpose else flat[:, start : start + step]
        slab = slab.to(torch.float64)
        grams.baddbmm_(slab.mT, slab)
        totals += slab.sum(dim=(-2, -1))
    return grams, totals


def _gram_numpy(flat: Tensor, transpose: bool, step: int) -> tuple[Tensor, Tensor]:
    """:func:`gram_matrix` on the CPU: numpy's ``a @ a.T`` is one BLAS ``syrk`` (torch has none)."""
    count, rows, cols = flat.shape
    m, n = (rows, cols) if transpose else (cols, rows)
    grams = np.zeros((count, m, m))
    totals = np.zeros(count)
    with _blas_threads():
        for b in range(count):
            for start in range(0, n, step):
                # A slab of X's rows as stored, C-contiguous float64: (m, k) columns of W when X = Wᵀ,
                # else (k, m) rows of W. numpy runs `a @ a.T` and `a.T @ a` as one syrk.
                part = flat[b, :, start : start + step] if transpose else flat[b, start : start + step]
                slab = part.to(torch.float64, memory_format=torch.contiguous_format).numpy()
                grams[b] += slab @ slab.T if transpose else slab.T @ slab
                totals[b] += slab.sum()
    return torch.from_numpy(grams), torch.from_numpy(totals)


def gram_eigenvalues(gram: Float[Tensor, "*batch m m"], n: int) -> Float[Tensor, "*batch m"]:
    """Eigenvalues of ``gram / n``, largest first, clamped at 0.

    ``gram`` is a float64 Gram matrix (:func:`gram_matrix`), symmetric positive semi-definite; rounding
    can leave eigenvalues of a rank-deficient one at ``-M·ε·λ_max``, which are reported as 0. On the
    CPU each matrix goes to LAPACK's ``dsyev`` (tridiagonal reduction and root-free QR: eigenvalues
    only) through SciPy, on other devices to a batched ``torch.linalg.eigvalsh``.

    Args:
        gram: Gram matrices with any leading batch axes.
        n: the normalisation ``N`` (the long side of the weight matrix).

    Returns:
        ``[*batch, m]`` float64, descending, ``≥ 0``.
    """
    gram = gram.to(torch.float64)
    eigs = _eigvalsh_lapack(gram) if gram.device.type == "cpu" else torch.linalg.eigvalsh(gram)
    return eigs.flip(-1).clamp_min_(0.0) / n


def _eigvalsh_lapack(gram: Tensor) -> Tensor:
    """Ascending eigenvalues of CPU symmetric matrices by SciPy's ``dsyev``, one matrix at a time.

    On one core this is 1.5–2× faster than ``torch.linalg.eigvalsh`` (MKL's ``syevd``) at 768 × 768.
    """
    from scipy.linalg import eigh

    flat = gram.reshape(-1, *gram.shape[-2:]).numpy()
    out = np.empty(flat.shape[:2])
    with _blas_threads():
        for b, g in enumerate(flat):
            out[b] = eigh(g, eigvals_only=True, driver="ev", check_finite=False)
    return torch.from_numpy(out).reshape(gram.shape[:-1])


@contextmanager
def _blas_threads() -> Iterator[None]:
    """numpy's and SciPy's BLAS with torch's thread count, so a worker set to one thread uses one.

    Without it OpenBLAS takes every core, and two workers sharing cores slow each other down many
    times over (docs/benchmarks.md, the environment finding).
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        # Finding the loaded BLAS libraries reads /proc (~15 ms), so it is done once, after SciPy's
        # LAPACK (the library it must see besides numpy's) is loaded.
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=torch.get_num_threads(), user_api="blas"):
        yield


_BLAS_CONTROLLER: Any = None


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
    x = _fit_values(eigs)
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


def _fit_values(eigs: Tensor) -> Float[Tensor, " n"]:
    """The eigenvalues a power-law fit reads: finite, not numerically zero, ascending, float64."""
    x = eigs.detach().reshape(-1).to(torch.float64)
    x = x[torch.isfinite(x)]
    if x.numel():
        x = x[x > _ZERO_EIG_RTOL * x.max().clamp_min(0.0)]
    return torch.sort(x).values


def alpha_bootstrap(
    eigs: Float[Tensor, " n"],
    min_tail: int = 10,
    n_boot: int = ALPHA_BOOT,
    seed: int = 0,
    candidates: int = ALPHA_BOOT_CANDIDATES,
    budget: int = ALPHA_BOOT_BUDGET,
) -> dict[str, float]:
    """Bootstrap of the power-law exponent over the eigenvalues, refitting ``λ_min`` in every resample.

    Each resample draws the fit's eigenvalues (those :func:`power_law_fit` reads) with replacement and
    fits them as :func:`power_law_fit` does: for each candidate ``λ_min`` the maximum-likelihood
    ``α = 1 + m / Σ ln(λ_i / λ_min)`` over its ``m`` tail points and the Kolmogorov–Smirnov distance of
    the tail to the fitted law; the candidate with the smallest distance wins. The candidates are
    ``candidates`` ranks evenly spaced over those leaving at least ``min_tail`` points (a drawn value's
    first occurrence, so a tie's tail holds all its copies). All resamples are fitted at once, in
    chunks of at most ``2**22`` (resample, candidate, point) elements; ``n_boot`` is lowered so that
    the whole bootstrap stays within ``budget`` such elements (never below 20 resamples), which bounds
    its cost on long spectra (docs/measures.md, "Weight matrices").

    Args:
        eigs: the eigenvalues (any order).
        min_tail: the fewest tail points a candidate may leave.
        n_boot: resamples at most.
        seed: seed of the draws.
        candidates: ``λ_min`` candidates per resample at most.
        budget: (resample × candidate × eigenvalue) elements of the whole bootstrap at most.

    Returns:
        ``alpha_boot_se`` (the resamples' standard deviation of α, ``ddof = 1``), ``alpha_ci_lo`` and
        ``alpha_ci_hi`` (their 2.5% and 97.5% percentiles) and ``n_boot`` (resamples with a valid fit).
        NaN (and ``n_boot`` 0) when fewer than ``min_tail`` eigenvalues or fewer than 2 valid fits.
    """
    x = _fit_values(eigs)
    n = x.numel()
    nan = float("nan")
    out = {"alpha_boot_se": nan, "alpha_ci_lo": nan, "alpha_ci_hi": nan, "n_boot": 0}
    if n < max(min_tail, 2):
        return out
    c = min(candidates, n - min_tail + 1)
    n_boot = max(min(n_boot, budget // (c * n)), 20)
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n, (n_boot, n), generator=gen).to(x.device)
    xb = torch.sort(x[draws], dim=1).values  # [boot, n] ascending
    logx = xb.log()
    suffix = logx.flip(1).cumsum(1).flip(1)  # Σ_{j ≥ i} ln x_j
    ranks = torch.linspace(0, n - min_tail, c, dtype=torch.float64).round().long().unique().to(x.device)
    # Each candidate's first occurrence in its resample: its tail is every point ≥ it.
    first = torch.searchsorted(xb, xb[:, ranks].contiguous(), side="left")  # [boot, c]
    m = (n - first).to(torch.float64)
    log_sum = suffix.gather(1, first) - m * logx.gather(1, first)
    valid = log_sum > 0
    alpha = 1.0 + m / torch.where(valid, log_sum, 1.0)
    ks = torch.full_like(alpha, math.inf)
    j_term = torch.arange(n, dtype=torch.float64, device=x.device).add_(0.5 - n)  # j + ½ − n
    cols = torch.arange(n, device=x.device)
    per_chunk = max(1, _KS_CHUNK_ELEMENTS // (ranks.numel() * n))
    for b0 in range(0, n_boot, per_chunk):
        sl = slice(b0, b0 + per_chunk)
        lx, f, a, inv_m = logx[sl], first[sl], alpha[sl], 1.0 / m[sl]
        # (B, C, n): |P_j − 1 + (j − i + ½)/m| over the tail j ≥ i, P_j = (x_j / λ_min)^(1−α).
        t = lx.unsqueeze(1) - lx.gather(1, f).unsqueeze(-1)
        t.mul_((1.0 - a).unsqueeze(-1)).exp_()
        t.add_(inv_m.unsqueeze(-1) * j_term).abs_()
        t.masked_fill_(cols < f.unsqueeze(-1), 0.0)
        ks[sl] = torch.where(valid[sl], t.amax(dim=-1) + 0.5 * inv_m, math.inf)
    best = ks.argmin(dim=1, keepdim=True)
    fitted = valid.any(dim=1)
    alpha_b = alpha.gather(1, best).squeeze(1)[fitted]
    if alpha_b.numel() < 2:
        return out
    lo, hi = torch.quantile(alpha_b, torch.tensor([0.025, 0.975], dtype=torch.float64, device=x.device))
    return {
        "alpha_boot_se": float(alpha_b.std(correction=1)),
        "alpha_ci_lo": float(lo),
        "alpha_ci_hi": float(hi),
        "n_boot": int(alpha_b.numel()),
    }


def _ks_distances(
    x: Float[Tensor, " n"], logx: Float[Tensor, " n"], cand: Tensor, alpha: Float[Tensor, " c"]
) -> Float[Tensor, " c"]:
    """KS distance of each candidate's tail ``x[cand[c]:]`` to its fitted power law; ``x`` ascending.

    For a tail of ``m`` points starting at index ``c`` the empirical CDF steps from ``k/m`` to
    ``(k+1)/m`` at its ``k``-th point, so with the model CDF ``F = 1 − P``, ``P = (x/λ_min)^(1−α)``,
    the two one-sided gaps are ``t + 1/(2m)`` and ``−t + 1/(2m)`` for ``t = P − 1 + (k + ½)/m``, and the
    distance is ``max_k |t| + 1/(2m)``; with ``k = j − c`` and ``m = n − c`` the term ``(k + ½)/m − 1``
    is ``(j + ½ − n)/m`` for the absolute index ``j``. Candidates are taken in chunks, each over the
    columns from its first candidate on; only a chunk's leading triangle (points before a candidate's
    own start) needs masking, so about half the candidates × points rectangle is never computed.
    """
    n = x.numel()
    out = torch.empty(cand.numel(), dtype=torch.float64, device=x.device)
    j_term = torch.arange(n, dtype=torch.float64, device=x.device).add_(0.5 - n)  # j + ½ − n ≤ 0
    # Chunks of an eighth of the candidates (the rectangle's wasted triangle shrinks with the chunk),
    # capped by the element budget.
    per_chunk = max(16, -(-cand.numel() // 8))
    start = 0
    while start < cand.numel():
        first = int(cand[start])
        size = max(1, min(per_chunk, _KS_CHUNK_ELEMENTS // (n - first)))
        c = cand[start : start + size]
        a = alpha[start : start + size]
        inv_m = 1.0 / (n - c).to(torch.float64)  # (C,) one over each tail's size
        t = logx[first:][None, :] - logx[c][:, None]  # (C, K) ln(x_j / λ_min)
        t.mul_((1.0 - a)[:, None]).exp_()  # P
        t.addcmul_(inv_m[:, None], j_term[first:][None, :]).abs_()  # |P − 1 + (k + ½)/m|
        last = int(c[-1])
        if last > first:  # points before each candidate's start: not in its tail, |t| = 0 never wins
            cols = torch.arange(first, last, device=x.device)
            t[:, : last - first].masked_fill_(cols[None, :] < c[:, None], 0.0)
        out[start : start + size] = t.amax(dim=1).add_(0.5 * inv_m)
        start += size
    return out
