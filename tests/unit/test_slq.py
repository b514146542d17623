"""Stochastic Lanczos quadrature against quadratics of known spectrum and against Hutchinson's trace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.analysis.inputs import repeated_random_tokens
from phasescope.config import get_settings
from phasescope.errors import MeasureError
from phasescope.measures.landscape import batch_loss, model_params
from phasescope.measures.sharpness import hessian_operator, hutchinson_trace, lanczos_top
from phasescope.measures.slq import (
    GRID_POINTS,
    basis_bytes,
    check_basis_memory,
    gauss_quadrature,
    hessian_density_table,
    lanczos_tridiagonal,
    rademacher_probes,
    slq,
    spectral_density,
)
from phasescope.measures.tables import UNCERTAINTY_COLUMNS
from tests.helpers import tiny_model


def quadratic(eigenvalues: np.ndarray, seed: int = 0):  # noqa: ANN201
    """The Hessian operator of ``½ xᵀAx``, ``A = Q diag(eigenvalues) Qᵀ`` (Q random orthogonal), and A."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    a = torch.tensor(q @ np.diag(eigenvalues) @ q.T)
    zero = torch.zeros(len(eigenvalues), dtype=torch.float64)
    return hessian_operator(lambda p: 0.5 * p["x"] @ a @ p["x"], {"x": zero}), a


def indefinite_spectrum(seed: int = 1) -> np.ndarray:
    """D = 150: 30% negative in [−3, −1], 20% flat (|λ| ≲ 0.06, under 1% of 10), 50% in [1, 10]."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-3, -1, 45), rng.normal(0, 0.02, 30), rng.uniform(1, 10, 75)])


def broadened(eigenvalues: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """The true spectrum broadened by the same Gaussians: (1/D) Σ_i N(x; λ_i, σ²)."""
    z = (grid[:, None] - eigenvalues[None, :]) / sigma
    return np.exp(-0.5 * z**2).sum(axis=1) / (len(eigenvalues) * sigma * np.sqrt(2 * np.pi))


def test_gauss_quadrature_moments_are_exact_per_probe_up_to_order_2m_minus_1() -> None:
    lam = indefinite_spectrum()
    op, a = quadratic(lam)
    steps, probes, seed = 12, 3, 5
    res = slq(op, steps, probes, seed=seed)
    assert res.n_hvp == steps * probes and all(len(t) == steps for t in res.nodes)
    for w in res.weights:
        assert w.sum() == pytest.approx(1.0, abs=1e-14)
    power = torch.eye(len(lam), dtype=torch.float64)
    for k in range(2 * steps):
        exact = np.array([float(v @ power @ v) / len(lam) for v in rademacher_probes(len(lam), probes, seed)])
        scale = np.asarray([np.sum(w * np.abs(t) ** k) for t, w in zip(res.nodes, res.weights, strict=True)])
        np.testing.assert_array_less(np.abs(res.moments(k) - exact), 1e-12 * scale + 1e-300)
        power = power @ a
    # Averaged over probes, the first moment is tr(A)/D within its standard error.
    tr, se = res.trace()
    assert abs(tr - lam.sum()) < 4 * se


def test_an_exhausted_krylov_space_gives_the_exact_spectrum() -> None:
    """Three distinct eigenvalues: Lanczos stops after 3 steps; a ±1 probe puts weight n_i/D on each."""
    lam = np.repeat([-1.0, 0.0, 2.0], [10, 20, 30])
    op = hessian_operator(
        lambda p: 0.5 * (torch.tensor(lam) * p["x"] ** 2).sum(), {"x": torch.zeros(60, dtype=torch.float64)}
    )
    alpha, beta = lanczos_tridiagonal(op, next(rademacher_probes(60, 1, 0)), 20)
    assert len(alpha) == 3 and len(beta) == 2
    res = slq(op, 20, 3, seed=0)
    for t, w in zip(res.nodes, res.weights, strict=True):
        np.testing.assert_allclose(t, [-1, 0, 2], atol=1e-12)
        np.testing.assert_allclose(w, [1 / 6, 1 / 3, 1 / 2], atol=1e-12)
    assert res.mass("flat") == pytest.approx((1 / 3, 0.0), abs=1e-12)
    assert res.mass("negative") == pytest.approx((1 / 6, 0.0), abs=1e-12)
    assert res.trace() == pytest.approx((50.0, 0.0), abs=1e-9)
    assert (res.lambda_min, res.lambda_max) == pytest.approx((-1.0, 2.0), abs=1e-12)


def test_density_matches_the_broadened_spectrum_and_integrates_to_one() -> None:
    lam = indefinite_spectrum()
    op, _ = quadratic(lam)
    res = slq(op, 30, 20, seed=0)
    width = res.lambda_max - res.lambda_min
    # Extreme Ritz values converge first: both ends of the spectrum to 1e-3 of its width.
    assert abs(res.lambda_max - lam.max()) < 1e-3 * width and abs(res.lambda_min - lam.min()) < 1e-3 * width
    # L1 distance to the truth at the default σ (1% of the width: 30 nodes per probe show as bumps)
    # and at σ = 5% (the bumps merge); a spectrum shifted by 1 (10% of the width) is far further off.
    for sigma, tolerance in ((None, 0.25), (0.05 * width, 0.1)):
        grid, density, s = spectral_density(res, sigma=sigma)
        assert len(grid) == GRID_POINTS
        assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
        l1 = np.trapezoid(np.abs(density - broadened(lam, grid, s)), grid)
        shifted = np.trapezoid(np.abs(density - broadened(lam + 1.0, grid, s)), grid)
        assert l1 < tolerance and shifted > 3 * l1, (sigma, l1, shifted)


def test_negative_and_flat_mass_of_an_indefinite_spectrum() -> None:
    lam = indefinite_spectrum()
    op, _ = quadratic(lam)
    res = slq(op, 30, 20, seed=1)
    eps_scale = 0.01 * np.abs(lam).max()
    for select, true in (
        ("negative", np.mean(lam < -eps_scale)),
        ("flat", np.mean(np.abs(lam) <= eps_scale)),
    ):
        mass, se = res.mass(select)
        assert true in (0.3, 0.2) and abs(mass - true) < 4 * se + 0.02, (select, mass, se, true)
    # A positive-definite spectrum has no negative mass.
    op, _ = quadratic(np.abs(lam) + 0.1)
    assert slq(op, 30, 4, seed=1).mass("negative") == (0.0, 0.0)


@pytest.fixture(scope="module")
def model_and_batch():  # noqa: ANN201
    return tiny_model(seed=1, n_layers=1), repeated_random_tokens(4, 4, 12, seed=2)


def test_trace_is_hutchinsons_with_the_same_probes_and_within_errors_with_others(model_and_batch) -> None:  # noqa: ANN001
    model, batch = model_and_batch
    op = hessian_operator(lambda p: batch_loss(model, p, batch), model_params(model))
    res = slq(op, 8, 6, seed=3)
    same = hutchinson_trace(op, 6, seed=3)
    # D·Σ w_j θ_j = D·α₁ = vᵀHv: the same numbers probe by probe, so the same mean and error.
    np.testing.assert_allclose(op.dim * res.moments(1), same.samples, rtol=1e-10)
    assert res.trace() == pytest.approx((same.trace, same.se), rel=1e-10)
    other = hutchinson_trace(op, 30, seed=11)
    tr, se = res.trace()
    assert abs(tr - other.trace) < 3 * np.hypot(se, other.se)


def test_table_on_a_tiny_model(model_and_batch) -> None:  # noqa: ANN001
    model, batch = model_and_batch
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    table = hessian_density_table(model, batch, 40, steps=24, probes=3, seed=0)
    assert set(table["quantity"]) == {
        "density",
        "mass_near_zero",
        "negative_mass",
        "trace",
        "lambda_min",
        "lambda_max",
    }
    assert (table["measure"] == "hessian_density").all() and (table["checkpoint"] == 40).all()
    assert set(UNCERTAINTY_COLUMNS[:1]) <= set(table.columns)
    rows = table.set_index("quantity")
    density = table[table["quantity"] == "density"]
    assert len(density) == GRID_POINTS and density["x"].is_monotonic_increasing
    assert np.trapezoid(density["value"], density["x"]) == pytest.approx(1.0, abs=1e-6)
    # The largest Ritz value is the top eigenvalue ARPACK finds on the same operator.
    op = hessian_operator(lambda p: batch_loss(model, p, batch), model_params(model))
    top = float(lanczos_top(op, 1, tol=1e-10).values[0])
    assert rows.loc["lambda_max", "value"] == pytest.approx(top, rel=1e-6)
    assert (
        rows.loc["lambda_min", "value"] < 0 < rows.loc["lambda_max", "value"]
    )  # an untrained model: a saddle
    for q in ("mass_near_zero", "negative_mass", "trace"):
        assert rows.loc[q, "se"] >= 0
    for q in ("mass_near_zero", "negative_mass"):
        assert 0 <= rows.loc[q, "value"] <= 1
    assert np.isnan(rows.loc["lambda_max", "se"])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_quadrature_of_one_step_is_its_rayleigh_quotient() -> None:
    nodes, weights = gauss_quadrature(np.array([2.5]), np.array([]))
    assert nodes.tolist() == [2.5] and weights.tolist() == [1.0]
    op, _ = quadratic(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="steps"):
        lanczos_tridiagonal(op, torch.ones(3, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="probes"):
        slq(op, 2, 0)


def test_the_lanczos_basis_is_bounded_before_any_product(model_and_batch) -> None:  # noqa: ANN001
    # The basis is min(m, D) rows of D float64 numbers: 24 steps on 124M parameters is 22.2 GiB.
    assert basis_bytes(124_000_000, 24) == 24 * 124_000_000 * 8
    assert basis_bytes(3, 10) == 3 * 3 * 8  # Lanczos stops at D steps
    with pytest.raises(MeasureError) as caught:
        check_basis_memory(124_000_000, 24, 4 * 2**30)
    message = caught.value.message
    assert caught.value.field == "params.slq_steps"
    assert "22.17 GiB" in message and "4,096 MiB" in message and "max_slq_basis_mib" in message
    assert "slq_steps to 4 or fewer" in message  # 4 × 124M × 8 bytes = 3.7 GiB fits, 5 does not
    check_basis_memory(124_000_000, 4, 4 * 2**30)
    with pytest.raises(MeasureError, match="no slq_steps"):
        check_basis_memory(10**9, 2, 4 * 2**30)  # even 2 steps of a 1B model are 14.9 GiB
    check_basis_memory(1000, 50, basis_bytes(1000, 50))  # the bound itself is allowed
    with pytest.raises(MeasureError):
        check_basis_memory(1000, 50, basis_bytes(1000, 50) - 1)
    check_basis_memory(10**12, 200, None)  # no bound
    # slq refuses before spending a Hessian-vector product.
    op, _ = quadratic(np.linspace(1.0, 2.0, 40))
    with pytest.raises(MeasureError, match="slq_steps"):
        slq(op, 30, 2, max_basis_bytes=basis_bytes(40, 30) - 1)
    assert op.n_calls == 0
    assert slq(op, 30, 2, max_basis_bytes=basis_bytes(40, 30)).n_hvp == op.n_calls > 0


def test_the_measure_reads_its_bound_from_the_settings(model_and_batch, monkeypatch) -> None:  # noqa: ANN001
    from phasescope.analysis.run import measure_landscape
    from phasescope.models.loading import LoadedModel, ModelRef
    from phasescope.schemas import MeasureParams

    model, batch = model_and_batch
    loaded = LoadedModel(ModelRef("tiny", "series", "tiny"), 0, model)
    dim = sum(p.numel() for p in model.parameters())
    assert get_settings().max_slq_basis_mib == 4096  # the documented default (docs/deployment.md)
    monkeypatch.setenv("PHASESCOPE_MAX_SLQ_BASIS_MIB", "1")
    get_settings.cache_clear()
    try:
        params = MeasureParams(slq_steps=200, slq_probes=1)  # 200 × 1,076 × 8 bytes = 1.6 MiB
        with pytest.raises(MeasureError, match=f"slq_steps to {2**20 // (8 * dim)} or fewer"):
            measure_landscape(loaded, ["hessian_density"], params, batch)
    finally:
        get_settings.cache_clear()
