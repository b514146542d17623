"""Hessian eigenvalues and trace against analytic quadratics and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.analysis.inputs import repeated_random_tokens
from phasescope.measures.landscape import batch_loss, model_params
from phasescope.measures.sharpness import (
    hessian_operator,
    hutchinson_trace,
    lanczos_top,
    power_top,
    sharpness_table,
)
from tests.helpers import tiny_model


def quadratic(eigenvalues: list[float], seed: int = 0):  # noqa: ANN201
    """The operator of ``L(x) = ½ xᵀAx`` with ``A = Q diag(eigenvalues) Qᵀ`` and the matrix A."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    a = torch.tensor(q @ np.diag(eigenvalues) @ q.T)
    op = hessian_operator(
        lambda p: 0.5 * p["x"] @ a @ p["x"], {"x": torch.zeros(len(eigenvalues), dtype=torch.float64)}
    )
    return op, a


EIGS = [10.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, -0.5, -1.0]


def test_lanczos_and_power_are_exact_on_a_quadratic() -> None:
    op, _ = quadratic(EIGS)
    lz = lanczos_top(op, 3, tol=1e-12)
    pw = power_top(op, 3, tol=1e-14, maxiter=5000)
    np.testing.assert_allclose(lz.values, [10, 7, 5], rtol=1e-8)
    np.testing.assert_allclose(pw.values, [10, 7, 5], rtol=1e-8)
    assert lz.converged.all() and pw.converged.all()
    assert (lz.residuals < 1e-8).all() and lz.n_hvp > 0 and pw.n_hvp > lz.n_hvp


def test_lanczos_finds_the_largest_algebraic_power_the_largest_magnitude() -> None:
    op, _ = quadratic([4.0, 3.0, 1.0, 0.5, -9.0])
    np.testing.assert_allclose(lanczos_top(op, 2, tol=1e-12).values, [4, 3], rtol=1e-8)
    np.testing.assert_allclose(lanczos_top(op, 1, tol=1e-12, which="LM").values, [-9], rtol=1e-8)
    np.testing.assert_allclose(power_top(op, 1, tol=1e-14, maxiter=5000).values, [-9], rtol=1e-8)


def test_hutchinson_is_exact_on_a_diagonal_and_unbiased_on_a_dense_matrix() -> None:
    diag = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    op = hessian_operator(
        lambda p: 0.5 * (diag * p["x"] ** 2).sum(), {"x": torch.ones(4, dtype=torch.float64)}
    )
    exact = hutchinson_trace(op, 5, seed=1)
    assert exact.trace == pytest.approx(4.5, abs=1e-12) and exact.se == pytest.approx(0, abs=1e-12)

    op, a = quadratic(EIGS, seed=3)
    est = hutchinson_trace(op, 400, seed=2)
    assert est.n_hvp == 400 and est.se > 0
    assert abs(est.trace - float(torch.trace(a))) < 4 * est.se


@pytest.fixture(scope="module")
def setup():  # noqa: ANN201
    model = tiny_model(seed=1, n_layers=1)
    batch = repeated_random_tokens(4, 4, 12, seed=2)
    theta = model_params(model)
    return model, batch, theta, hessian_operator(lambda p: batch_loss(model, p, batch), theta)


def test_vhv_matches_finite_difference_curvature(setup) -> None:  # noqa: ANN001
    model, batch, theta, op = setup
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v /= v.norm()
    vhv = float(v @ op(v))

    def loss_at(eps: float) -> float:
        offset, params = 0, {}
        for name, t in theta.items():
            params[name] = t + eps * v[offset : offset + t.numel()].reshape(t.shape)
            offset += t.numel()
        with torch.no_grad():
            return float(batch_loss(model, params, batch))

    eps = 1e-3
    fd = (loss_at(eps) - 2 * loss_at(0.0) + loss_at(-eps)) / eps**2
    assert vhv == pytest.approx(fd, rel=1e-3)


def test_power_iteration_agrees_with_lanczos_on_a_model(setup) -> None:  # noqa: ANN001
    *_, op = setup
    # Top pair only: deflation is checked exactly on the quadratic, and the model's top two
    # eigenvalues are 6% apart, which makes power iteration slow.
    lz = lanczos_top(op, 1, tol=1e-8, which="LM")
    pw = power_top(op, 1, tol=1e-7, maxiter=3000)
    assert pw.converged.all() and lz.converged.all()
    np.testing.assert_allclose(pw.values, lz.values, rtol=1e-4)


def test_table_reports_eigenvalues_trace_and_convergence(setup) -> None:  # noqa: ANN001
    model, batch, theta, _ = setup
    table = sharpness_table(model, batch, 50, k=2, n_trace=3, tol=1e-4)
    got = table.groupby("quantity").size().to_dict()
    assert got == {
        "hessian_eigenvalue": 2,
        "lanczos_residual": 2,
        "hessian_converged": 2,
        "hessian_trace": 1,
        "hessian_trace_se": 1,
        "n_hvp": 1,
    }
    eig = table[table["quantity"] == "hessian_eigenvalue"].sort_values("index")["value"].to_numpy()
    assert eig[0] >= eig[1]
    assert table.loc[table["quantity"] == "hessian_converged", "value"].eq(1).all()
    assert all(torch.equal(p, theta[n]) for n, p in model.named_parameters())
    power = sharpness_table(model, batch, 50, k=1, method="power", n_trace=0, tol=1e-3)
    assert set(power["quantity"]) == {"hessian_eigenvalue", "power_residual", "hessian_converged", "n_hvp"}
    with pytest.raises(ValueError, match="method"):
        sharpness_table(model, batch, 50, method="qr")
