"""Attention thermodynamics against the identities of docs/measures.md, in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from phasescope.errors import MeasureError
from phasescope.measures import thermo
from phasescope.measures.boltzmann import sweep_plan
from phasescope.measures.entropy import row_entropy
from phasescope.measures.tables import BASE_COLUMNS
from phasescope.measures.thermo import ROW_QUANTITIES, beta_grid, row_thermo, thermo_table

BETAS = torch.tensor([0.1, 0.3, 1.0, 3.0, 10.0], dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _causal(scores: torch.Tensor) -> torch.Tensor:
    q, k = scores.shape[-2:]
    return scores.masked_fill(torch.ones(q, k, dtype=torch.bool).triu(1), -math.inf)


def _random_causal(seed: int, shape: tuple[int, ...] = (2, 3, 2, 6), scale: float = 2.0) -> torch.Tensor:
    """``[layer, batch, head, seq, seq]`` float64 causal scores with a random offset per row."""
    gen = _gen(seed)
    s = scale * torch.randn(*shape, shape[-1], generator=gen, dtype=torch.float64)
    return _causal(s + 5 * torch.randn(*shape, 1, generator=gen, dtype=torch.float64))


def _beta(out: torch.Tensor) -> torch.Tensor:
    """BETAS broadcast against a ``[beta, ...]`` output."""
    return BETAS.reshape(-1, *([1] * (out.ndim - 1)))


def test_beta_grid_is_uniform_between_log_spaced_knots_with_exact_one() -> None:
    grid = beta_grid()
    assert grid.dtype == torch.float64 and grid.shape == (61,)
    assert grid[0].item() == 0.05 and grid[-1].item() == 20.0
    assert grid[30].item() == 1.0  # exactly, not 0.9999999999999998
    assert (grid.diff() > 0).all()
    # Every 6th point is the log grid's; between two such knots the steps are equal in β.
    log_grid = torch.logspace(math.log10(0.05), math.log10(20.0), 61, dtype=torch.float64)
    torch.testing.assert_close(grid[::6], log_grid[::6], rtol=1e-13, atol=0)
    steps = grid.diff().reshape(10, 6)
    torch.testing.assert_close(steps, steps[:, :1].expand(10, 6), rtol=1e-12, atol=0)
    # The density in ln β stays near the log grid's 0.1 per step.
    log_steps = grid.log().diff()
    assert 0.07 < log_steps.min() and log_steps.max() < 0.13
    # So the sweep makes one exp and ten rates for the whole default grid.
    plan = sweep_plan(grid.tolist())
    assert [kind for kind, _ in plan].count("exp") == 1 and len({v for k, v in plan if k == "mul"}) == 10
    assert (beta_grid(0.1, 10.0, 21) == 1.0).sum() == 1
    assert (beta_grid(0.5, 3.0, 10).diff() > 0).all()
    for bad in [(0.0, 1.0, 5), (2.0, 1.0, 5), (0.1, 1.0, 1)]:
        with pytest.raises(MeasureError):
            beta_grid(*bad)


def test_uniform_rows_are_ln_n_with_zero_heat_capacity() -> None:
    # Identity 1 at every β: n = 1..5 keys of one random level per row.
    level = 3 * torch.randn(2, 5, 1, generator=_gen(0), dtype=torch.float64)
    out = row_thermo(_causal(level.expand(2, 5, 5)), BETAS)
    n = torch.arange(1, 6, dtype=torch.float64).expand(len(BETAS), 2, 5)
    torch.testing.assert_close(out["entropy"], n.log(), rtol=0, atol=1e-12)
    assert out["heat_capacity"].abs().max() < 1e-14
    torch.testing.assert_close(out["internal_energy"], -level.squeeze(-1).expand(len(BETAS), 2, 5))
    torch.testing.assert_close(
        out["free_energy"], -level.squeeze(-1) - n.log() / _beta(n), rtol=1e-12, atol=1e-12
    )


def test_one_hot_row_has_zero_entropy() -> None:
    s = torch.randn(3, 8, generator=_gen(1), dtype=torch.float64)
    s[:, 2] += 1e3
    out = row_thermo(s, torch.tensor([1.0], dtype=torch.float64))
    assert out["entropy"].abs().max() < 1e-12 and out["heat_capacity"].abs().max() < 1e-12


def test_entropy_is_beta_u_minus_f_and_matches_softmax_at_beta_one() -> None:
    # Identity 2, with causal masks.
    s = _random_causal(2)
    out = row_thermo(s, BETAS)
    beta = _beta(out["entropy"])
    torch.testing.assert_close(
        beta * (out["internal_energy"] - out["free_energy"]), out["entropy"], rtol=0, atol=1e-10
    )
    at_one = out["entropy"][2]
    torch.testing.assert_close(
        at_one, torch.distributions.Categorical(logits=s).entropy(), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(at_one, row_entropy(s)["entropy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(out["beta_f"], beta * out["free_energy"], rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(
        out["log_z"], torch.logsumexp(beta.unsqueeze(-1) * s, dim=-1), rtol=1e-13, atol=1e-12
    )


def test_heat_capacity_is_minus_beta_ds_dbeta_by_autograd() -> None:
    # Identity 3: C = β² Var(E) against -β dS/dβ, and against U = -d ln Z/dβ, C = β² d² ln Z/dβ².
    s = _random_causal(3, shape=(1, 2, 2, 5))
    betas = BETAS.clone().requires_grad_(True)
    out = row_thermo(s, betas)
    rows = out["entropy"].reshape(len(BETAS), -1)
    log_z = out["log_z"].reshape(len(BETAS), -1)
    heat = out["heat_capacity"].reshape(len(BETAS), -1).detach()
    internal = out["internal_energy"].reshape(len(BETAS), -1).detach()
    for r in range(rows.shape[1]):
        # Row r at β_b depends on β_b alone, so the gradient of the column sum is dS(β_b)/dβ_b.
        (ds,) = torch.autograd.grad(rows[:, r].sum(), betas, retain_graph=True)
        torch.testing.assert_close(-BETAS * ds, heat[:, r], rtol=1e-10, atol=1e-13)
        (dlz,) = torch.autograd.grad(log_z[:, r].sum(), betas, create_graph=True, retain_graph=True)
        torch.testing.assert_close(-dlz.detach(), internal[:, r], rtol=1e-10, atol=1e-12)
        (d2lz,) = torch.autograd.grad(dlz.sum(), betas, retain_graph=True)
        torch.testing.assert_close(BETAS**2 * d2lz, heat[:, r], rtol=1e-10, atol=1e-13)
    assert heat.max() > 0.1  # the check is not vacuous


def test_limits_of_high_and_low_temperature() -> None:
    # Identity 4. β → 0: S → ln n, C → 0. β → ∞ with a unique maximum: S → 0, F → min E.
    s = _random_causal(4)
    n = (~s.isneginf()).sum(-1).double()
    hot = row_thermo(s, torch.tensor([1e-8], dtype=torch.float64))
    torch.testing.assert_close(hot["entropy"][0], n.log(), rtol=0, atol=1e-10)
    assert hot["heat_capacity"].max() < 1e-12

    top = s.amax(-1, keepdim=True)
    unique = torch.where(s == top, s + 1.0, s)  # a gap of at least 1 above the rest
    cold = row_thermo(unique, torch.tensor([1e4], dtype=torch.float64))
    assert cold["entropy"].abs().max() < 1e-12 and cold["heat_capacity"].abs().max() < 1e-12
    torch.testing.assert_close(cold["free_energy"][0], -(top.squeeze(-1) + 1.0), rtol=0, atol=1e-10)
    assert not any(v.isnan().any() for v in cold.values())


def test_row_constant_shifts_u_and_f_only() -> None:
    # Identity 5: s + c_i leaves S, C (and so p) unchanged and shifts U and F by -c_i.
    s = _random_causal(5)
    c = 30 * torch.randn(*s.shape[:-1], 1, generator=_gen(6), dtype=torch.float64)
    a, b = row_thermo(s, BETAS), row_thermo(s + c, BETAS)
    for q in ("entropy", "heat_capacity"):
        torch.testing.assert_close(b[q], a[q], rtol=1e-10, atol=1e-10)
    for q in ("internal_energy", "free_energy"):
        torch.testing.assert_close(b[q], a[q] - c.squeeze(-1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        b["log_z"], a["log_z"] + _beta(a["log_z"]) * c.squeeze(-1), rtol=1e-12, atol=1e-10
    )


def test_masks_never_make_nan_values_or_gradients() -> None:
    # Identity 6: -inf keys enter neither values nor gradients as 0 * inf.
    s = _random_causal(7).requires_grad_(True)
    betas = beta_grid().requires_grad_(True)
    out = row_thermo(s, betas)
    assert not any(v.isnan().any() or v.isinf().any() for v in out.values())
    sum(v.sum() for v in out.values()).backward()
    assert s.grad is not None and betas.grad is not None
    assert not s.grad.isnan().any() and not betas.grad.isnan().any()
    assert out["entropy"].dtype == torch.float64


def test_chunked_sweep_matches_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _random_causal(8).float()
    whole = row_thermo(s, beta_grid())
    monkeypatch.setattr(thermo, "_CHUNK_ELEMENTS", 1000)  # a few β per chunk
    chunked = row_thermo(s, beta_grid())
    for q in ROW_QUANTITIES:
        torch.testing.assert_close(chunked[q], whole[q], rtol=0, atol=0)


def _two_level(gaps: list[float], seed: int = 9) -> torch.Tensor:
    """``[1, 3, heads, 4, 2]`` bidirectional rows with scores (c, c - gap): one gap per head."""
    gen = _gen(seed)
    c = 10 * torch.randn(1, 3, len(gaps), 4, 1, generator=gen, dtype=torch.float64)
    gap = torch.tensor(gaps, dtype=torch.float64).reshape(1, 1, -1, 1, 1)
    s = torch.cat([c, c - gap], dim=-1)
    swap = torch.rand(1, 3, len(gaps), 4, 1, generator=gen) < 0.5  # key order must not matter
    return torch.where(swap, s.flip(-1), s)


def _two_level_heat(beta: np.ndarray, gap: float) -> np.ndarray:
    x = beta * gap
    return x**2 * np.exp(-x) / (1 + np.exp(-x)) ** 2


X_STAR = brentq(lambda x: x * math.tanh(x / 2) - 2, 1.0, 4.0)
"""The two-level system's peak: C(β) = x² eˣ / (1 + eˣ)² with x = βΔ peaks where x tanh(x/2) = 2."""


def _relative_errors(table, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Per head: |β*/target − 1| of the table's (parabolic) β* and of the grid point of the maximum."""
    summary = table[table["beta"].isna() & table["index"].isna()]
    summary = summary.pivot(index="head", columns="quantity", values="value")
    heat = table[table["quantity"] == "heat_capacity"].pivot(index="head", columns="beta", values="value")
    grid_argmax = heat.columns.to_numpy()[heat.to_numpy().argmax(axis=1)]
    return np.abs(summary["beta_star"].to_numpy() / targets - 1), np.abs(grid_argmax / targets - 1)


def test_beta_star_of_a_two_level_system() -> None:
    assert X_STAR == pytest.approx(2.39936, abs=1e-5)
    # 40 gaps put the analytic peak x*/Δ at every offset between the grid points from 0.07 to 15.
    targets = np.exp(np.linspace(math.log(0.07), math.log(15.0), 40))
    gaps = (X_STAR / targets).tolist()
    betas = beta_grid()
    table = thermo_table(_two_level(gaps), checkpoint=3, betas=betas)
    parabolic, argmax = _relative_errors(table, targets)
    # The parabola in ln β through the grid maximum and its neighbours: its error is set by the skew of
    # C(ln β) and the squared step (up to 0.128 in ln β on this grid): measured at most 2.5e-3 here.
    assert parabolic.max() < 3e-3, parabolic
    # The grid point alone is off by up to half a step (here measured 6%): the interpolation matters.
    assert argmax.max() > 3e-2 and parabolic.max() < argmax.max() / 10
    # On a grid whose steps are at most 0.079 in ln β (91 points) the parabola is within 1e-3 of the
    # grid-free answer for every gap (the error falls as the step squared), the grid point is not.
    parabolic, argmax = _relative_errors(
        thermo_table(_two_level(gaps), checkpoint=3, betas=beta_grid(0.05, 20.0, 91)), targets
    )
    assert parabolic.max() < 1e-3 and argmax.max() > 1e-2, (parabolic.max(), argmax.max())
    summary = table[table["beta"].isna() & table["index"].isna()]
    summary = summary.pivot(index="head", columns="quantity", values="value")
    grid = betas.numpy()
    for head, gap in enumerate(gaps):
        heat = _two_level_heat(grid, gap)
        assert summary.loc[head, "beta_star_censored"] == 0 and np.isnan(summary.loc[head, "beta_star_bound"])
        assert summary.loc[head, "heat_capacity_max"] == pytest.approx(heat.max(), rel=1e-12)
        sweep = table[(table["quantity"] == "heat_capacity") & (table["head"] == head)]
        np.testing.assert_allclose(sweep["value"].to_numpy(), heat, rtol=1e-10, atol=1e-14)


def test_peak_beta_is_exact_for_a_parabola_in_ln_beta() -> None:
    betas = beta_grid()
    peaks = torch.tensor([0.0731, 0.5, 1.0, 1.234, 7.7], dtype=torch.float64)
    heat = 3.0 - (betas.log() - peaks.log().unsqueeze(-1)) ** 2  # [peak, beta]
    star, censored, edge = thermo.peak_beta(heat, betas)
    torch.testing.assert_close(star, peaks, rtol=1e-12, atol=0)
    assert (censored == 0).all()
    # The grid maximum's β is the edge reported for censoring; a peak past the grid is censored.
    beyond = 3.0 - (betas.log() - math.log(40.0)) ** 2
    star, censored, edge = thermo.peak_beta(beyond, betas)
    assert math.isnan(star) and censored == 1 and edge == 20.0


def test_beta_star_bootstrap_and_per_prompt_peaks() -> None:
    # Three prompts, each a two-level system of its own gap on every head: each prompt's β* is its own
    # x*/Δ_p, the pooled β* lies between them, its bootstrap interval covers it and has a spread.
    prompt_targets = np.array([0.8, 1.0, 1.3])
    rows = _two_level((X_STAR / prompt_targets).tolist())  # [1, 3, 3, 4, 2]: head h has gap h
    scores = rows.transpose(1, 2).contiguous()  # now prompt p has gap p on every head
    table = thermo_table(scores, checkpoint=0)
    star = table[table["quantity"] == "beta_star"]
    per = table[table["quantity"] == "beta_star_prompt"]
    assert len(per) == 3 * 3
    for p, target in enumerate(prompt_targets):
        got = per[per["index"] == p]["value"].to_numpy()
        np.testing.assert_allclose(got, target, rtol=3e-3)
    assert ((star["value"] > 0.8) & (star["value"] < 1.3)).all()
    assert ((star["ci_lo"] <= star["value"]) & (star["value"] <= star["ci_hi"])).all()
    assert (star["se"] > 0.01).all() and (star["ci_hi"] - star["ci_lo"] > 0.05).all()
    chi = table[table["quantity"] == "beta_star_chi"]["value"].to_numpy()
    np.testing.assert_allclose(chi, 4 * per.groupby("head")["value"].var(ddof=1).to_numpy(), rtol=1e-9)
    # Identical prompts: every resample is the same curve, so no spread at all.
    same = thermo_table(scores[:, :1].expand(-1, 5, -1, -1, -1).contiguous(), checkpoint=0)
    star = same[same["quantity"] == "beta_star"]
    assert (star["se"] < 1e-12).all()
    np.testing.assert_allclose(star["ci_lo"], star["value"], rtol=1e-12)
    np.testing.assert_allclose(star["ci_hi"], star["value"], rtol=1e-12)


def test_beta_star_censoring() -> None:
    gen = _gen(10)
    s = torch.randn(1, 2, 3, 6, 6, generator=gen, dtype=torch.float64)
    s[:, :, 0] *= 1e-3  # nearly uniform: C grows as β² Var(E) to the top of the grid
    s[:, :, 1] = 0.0  # exactly uniform: C = 0, the vanishing-gap limit
    s[:, :, 2] *= 400.0  # a huge spread: the peak lies below the first point
    table = thermo_table(s + 3 * torch.randn(1, 2, 3, 6, 1, generator=gen), checkpoint=0)
    summary = table[table["beta"].isna()].pivot(index="head", columns="quantity", values="value")
    assert summary["beta_star"].isna().all()
    assert summary["beta_star_censored"].tolist() == [1.0, 1.0, -1.0]
    assert summary["beta_star_bound"].tolist() == [20.0, 20.0, 0.05]


def test_thermo_table_shapes_dtypes_and_averages() -> None:
    s = _random_causal(11).float()
    layers, _, heads, seq = s.shape[:4]
    betas = beta_grid(0.1, 10.0, 9)
    table = thermo_table(s, checkpoint=25, betas=betas)
    assert list(table.columns) == BASE_COLUMNS + ["beta", "index", "se", "ci_lo", "ci_hi"]
    assert (table["measure"] == "thermo").all() and (table["checkpoint"] == 25).all()
    assert table["value"].dtype == "float64" and table["beta"].dtype == "float64"
    counts = table["quantity"].value_counts()
    for q in ROW_QUANTITIES:
        assert counts[q] == layers * heads * len(betas)
    for q in ("beta_star", "beta_star_censored", "beta_star_bound", "heat_capacity_max"):
        assert counts[q] == layers * heads
    sweep = table[table["beta"].notna()]
    assert not sweep["value"].isna().any()
    assert set(sweep["beta"]) == set(betas.tolist())
    # The table's in-place sweep equals the mean of row_thermo over rows with n >= 2 (query > 0).
    rows = row_thermo(s, betas)
    for q in ROW_QUANTITIES:
        expected = rows[q][..., 1:].mean(dim=(2, 4)).permute(1, 2, 0).reshape(-1)
        got = torch.tensor(table[table["quantity"] == q]["value"].to_numpy())
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_thermo_table_refuses_bad_grids_and_shapes() -> None:
    s = _random_causal(12)
    for betas in (torch.tensor([1.0, 0.5, 2.0]), torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 1.0, 2.0])):
        with pytest.raises(MeasureError):
            thermo_table(s, checkpoint=0, betas=betas)
    with pytest.raises(MeasureError):
        thermo_table(s[0], checkpoint=0)
