"""The Gram route of the weight and QK/OV spectra against the SVD route (docs/measures.md, "Weight
matrices" and "QK and OV circuits"): the bound it keeps, on random, rank-deficient, ill-conditioned
and power-law inputs, and its reuse of Grams inside ``spectra_table``."""

from __future__ import annotations

import math

import pytest
import torch

from phasescope.measures import powerlaw
from phasescope.measures.powerlaw import gram_eigenvalues, gram_matrix, power_law_fit, weight_esd
from phasescope.measures.spectra import (
    factored_svdvals,
    product_singular_values,
    qk_ov_singular_values,
    spectra_table,
)

F64 = torch.float64
EPS = torch.finfo(F64).eps


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def svd_esd(W: torch.Tensor) -> torch.Tensor:
    """The SVD route (the reference): σ²/N of the tall orientation, descending."""
    W = W.to(F64)
    if W.shape[-2] < W.shape[-1]:
        W = W.mT
    return torch.linalg.svdvals(W).square() / W.shape[-2]


def with_spectrum(n: int, singular_values: torch.Tensor, seed: int) -> torch.Tensor:
    """An ``n × len(s)`` matrix ``U diag(s) Vᵀ`` with random orthonormal ``U``, ``V``."""
    g = _gen(seed)
    m = singular_values.numel()
    U, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=F64))
    return (U * singular_values) @ V.T


def assert_gram_bound(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|λ_gram − λ_svd| ≤ M·ε·λ_max for every eigenvalue (the documented bound), both ≥ 0."""
    gram, ref = weight_esd(W), svd_esd(W)
    m = ref.shape[-1]
    assert gram.shape == ref.shape and (gram >= 0).all()
    assert ((gram - ref).abs() <= m * EPS * ref[..., :1]).all()
    return gram, ref


@pytest.mark.parametrize("shape", [(300, 100), (100, 300), (3, 200, 200), (1000, 64), (2, 64, 1000)])
def test_gram_route_matches_svd_on_random_matrices(shape):
    W = torch.randn(*shape, generator=_gen(sum(shape)), dtype=F64)
    gram, ref = assert_gram_bound(W)
    # Relative digits where λ is not small (a square Gaussian's ESD reaches down to 0).
    large = ref >= 1e-3 * ref[..., :1]
    torch.testing.assert_close(gram[large], ref[large], rtol=1e-12, atol=0)


def test_gram_route_on_a_float32_embedding_sized_in_slabs(monkeypatch):
    # Slabs of 1000 elements: the 3000-row matrix is accumulated over 60 slabs, cast one at a time.
    monkeypatch.setattr(powerlaw, "_GRAM_SLAB_ELEMENTS", 1000)
    W = torch.randn(3000, 50, generator=_gen(1))  # float32, as model weights are
    gram, ref = assert_gram_bound(W)
    torch.testing.assert_close(gram, ref, rtol=1e-12, atol=0)
    _, total = gram_matrix(W)
    assert total.item() == pytest.approx(W.double().sum().item(), rel=1e-12)


def test_rank_deficient_matrix_zero_eigenvalues_stay_below_the_bound():
    g = _gen(2)
    W = torch.randn(400, 20, generator=g, dtype=F64) @ torch.randn(20, 100, generator=g, dtype=F64)
    gram, ref = assert_gram_bound(W)
    torch.testing.assert_close(gram[:20], ref[:20], rtol=1e-12, atol=0)  # the rank-20 part
    assert gram[20:].max() <= 100 * EPS * gram[0]  # numerically zero, clamped at ≥ 0
    fit, fit_ref = power_law_fit(gram), power_law_fit(ref)  # the 80 zeros are dropped by both
    assert fit["n_tail"] == fit_ref["n_tail"] <= 20
    assert fit["alpha"] == pytest.approx(fit_ref["alpha"], rel=1e-12)


def test_ill_conditioned_matrix_large_eigenvalues_keep_their_digits():
    # κ(W) = 1e7, so κ(WᵀW) = 1e14: the smallest eigenvalues are at the Gram route's floor.
    s = torch.logspace(0, -7, 200, dtype=F64)
    W = with_spectrum(500, s, seed=3)
    gram, ref = assert_gram_bound(W)
    large = ref >= 1e-3 * ref[0]
    torch.testing.assert_close(gram[large], ref[large], rtol=1e-12, atol=0)
    expected = s.square() / 500  # the exact ESD
    assert ((gram - expected).abs() <= 200 * EPS * expected[0]).all()


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_tail_fit_on_a_power_law_spectrum_is_the_same_by_either_route(alpha):
    # Eigenvalues with a Pareto tail p(λ) ∝ λ^-α spanning 3–4 decades: the fit, its λ_min and α agree.
    u = torch.rand(300, generator=_gen(4), dtype=F64)
    lam = (1e-2 * u.pow(-1.0 / (alpha - 1.0))).sort(descending=True).values
    n = 900
    W = with_spectrum(n, (lam * n).sqrt(), seed=5)
    gram, ref = assert_gram_bound(W)
    torch.testing.assert_close(ref, lam, rtol=1e-10, atol=0)
    fit, fit_ref = power_law_fit(gram), power_law_fit(ref)
    assert fit["xmin"] == pytest.approx(fit_ref["xmin"], rel=1e-12)
    assert fit["n_tail"] == fit_ref["n_tail"]
    assert fit["alpha"] == pytest.approx(fit_ref["alpha"], rel=1e-10)
    assert fit["alpha_se"] == pytest.approx(fit_ref["alpha_se"], rel=1e-10)
    assert fit["alpha"] == pytest.approx(alpha, abs=5 * fit["alpha_se"])


def test_gram_of_each_orientation_and_the_torch_path_agree():
    W = torch.randn(2, 60, 90, generator=_gen(6))
    tall, total = gram_matrix(W)  # X = Wᵀ: (2, 60, 60)
    wide, _ = gram_matrix(W, transpose=False)  # X = W: (2, 90, 90)
    w = W.double()
    torch.testing.assert_close(tall, w @ w.mT, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(wide, w.mT @ w, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(total, w.sum((-2, -1)), rtol=1e-13, atol=1e-12)
    # The device-agnostic path (what a GPU runs), here on the CPU, slab by slab.
    for transpose, expected in ((True, tall), (False, wide)):
        grams, totals = powerlaw._gram_torch(W, transpose, 7)
        torch.testing.assert_close(grams, expected, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(totals, total, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(
        powerlaw._eigvalsh_lapack(tall), torch.linalg.eigvalsh(tall), rtol=1e-12, atol=1e-12
    )
    assert (gram_eigenvalues(torch.zeros(3, 3, dtype=F64), 5) == 0).all()


# --- QK / OV from Grams -------------------------------------------------------------------------------


def test_product_singular_values_match_the_qr_route_on_random_factors():
    g = _gen(7)
    A = torch.randn(2, 3, 64, 16, generator=g, dtype=F64)
    B = torch.randn(2, 3, 16, 64, generator=g, dtype=F64)
    got = product_singular_values(A.mT @ A, B @ B.mT)
    torch.testing.assert_close(got, factored_svdvals(A, B), rtol=1e-12, atol=0)
    torch.testing.assert_close(got, torch.linalg.svdvals(A @ B)[..., :16], rtol=1e-12, atol=0)


def test_product_singular_values_of_rank_deficient_and_zero_factors():
    g = _gen(8)
    A = torch.randn(64, 5, generator=g, dtype=F64) @ torch.randn(5, 16, generator=g, dtype=F64)  # rank 5
    B = torch.randn(16, 64, generator=g, dtype=F64)
    got = product_singular_values(A.mT @ A, B @ B.mT)  # AᵀA is singular: the eigendecomposition branch
    ref = factored_svdvals(A, B)
    torch.testing.assert_close(got[:5], ref[:5], rtol=1e-10, atol=0)
    # σ² is resolved to ~r·ε·‖A‖²‖B‖², so a zero σ comes out below √(r·ε)·‖A‖‖B‖.
    floor = math.sqrt(16 * EPS) * torch.linalg.matrix_norm(A, 2) * torch.linalg.matrix_norm(B, 2)
    assert (got[5:] <= floor).all()
    zero = product_singular_values(torch.zeros(16, 16, dtype=F64), B @ B.mT)  # W_O initialised at 0
    assert (zero == 0).all() and zero.shape == (16,)
    narrow = torch.randn(3, 5, generator=g, dtype=F64)  # m < r: min(m, r, n) values
    right = torch.randn(5, 7, generator=g, dtype=F64)
    got = product_singular_values(narrow.mT @ narrow, right @ right.mT, 3)
    torch.testing.assert_close(got, torch.linalg.svdvals(narrow @ right), rtol=1e-10, atol=1e-12)


def _head_weights(layers: int, heads: int, d_model: int, d_head: int, seed: int) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) / math.sqrt(d_model)  # noqa: E731
    return {
        "W_Q": r(layers, heads, d_model, d_head),
        "W_K": r(layers, heads, d_model, d_head),
        "W_V": r(layers, heads, d_model, d_head),
        "W_O": r(layers, heads, d_head, d_model),
    }


@pytest.mark.parametrize(
    "heads, d_model, d_head",
    [
        (4, 32, 8),
        (4, 48, 8),
        (4, 16, 8),
    ],  # square (W_O taken as W_O W_Oᵀ), d_model > H·d_head, d_model < H·d_head
)
def test_spectra_table_reuses_the_weight_grams_for_qk_and_ov(heads, d_model, d_head):
    weights = _head_weights(2, heads, d_model, d_head, seed=9)
    table = spectra_table(None, weights, 0)
    qk, ov = qk_ov_singular_values(*(weights[n] for n in ("W_Q", "W_K", "W_V", "W_O")))
    ref_qk = factored_svdvals(weights["W_Q"], weights["W_K"].mT)
    torch.testing.assert_close(qk, ref_qk, rtol=1e-10, atol=1e-12)
    for quantity, expected in (("qk_sigma", qk), ("ov_sigma", ov)):
        rows = table[table.quantity == quantity].sort_values(["layer", "head", "index"])
        got = torch.tensor(rows["value"].to_numpy(), dtype=F64).reshape(expected.shape)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_mp_variance_from_the_gram_trace_and_with_a_dominant_mean():
    # Small mean: E[w²] − E[w]² from the Gram's trace; mean ≫ std: the two-pass fallback.
    for offset in (0.0, 100.0):
        W = torch.randn(2, 120, 40, generator=_gen(10), dtype=F64) * 0.1 + offset
        table = spectra_table(None, {"W_in": W}, 0)
        plus = table[table.quantity == "mp_lambda_plus"].sort_values("layer")["value"].to_numpy()
        var = W.flatten(1).var(dim=1, correction=0)
        expected = var * (1 + math.sqrt(40 / 120)) ** 2
        assert plus == pytest.approx(expected.tolist(), rel=1e-12)
