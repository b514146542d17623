"""Attention thermodynamics against the identities of docs/measures.md, in float64."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import brentq, minimize_scalar

from phasescope.errors import MeasureError
from phasescope.measures import thermo
from phasescope.measures.boltzmann import sweep_plan, weights_buffer
from phasescope.measures.entropy import row_entropy
from phasescope.measures.tables import BASE_COLUMNS
from phasescope.measures.thermo import ROW_QUANTITIES, beta_grid, row_thermo, thermo_table
from phasescope.measures.thermo_peak import parabola_vertex, refine_peak

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


def _summary(table) -> pd.DataFrame:  # noqa: ANN001
    """The per-head quantities of a thermo table, one row per head."""
    summary = table[table["beta"].isna() & table["index"].isna()]
    return summary.pivot(index="head", columns="quantity", values="value")


def _relative_errors(table, targets: np.ndarray) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Per head |β/target − 1| of the table's β*, of the grid parabola's vertex and of the grid maximum."""
    heat = table[table["quantity"] == "heat_capacity"].pivot(index="head", columns="beta", values="value")
    grid = torch.tensor(heat.columns.to_numpy())
    parabola, _, argmax = thermo.peak_beta(torch.tensor(heat.to_numpy()), grid)
    got = {"refined": _summary(table)["beta_star"].to_numpy(), "parabola": parabola.numpy()}
    got["argmax"] = argmax.numpy()
    return {k: np.abs(v / targets - 1) for k, v in got.items()}


def _inside_neighbours(table) -> bool:  # noqa: ANN001
    """Whether every head's β* lies between the grid maximum's two neighbours."""
    heat = table[table["quantity"] == "heat_capacity"].pivot(index="head", columns="beta", values="value")
    grid = heat.columns.to_numpy()
    i = heat.to_numpy().argmax(axis=1)
    star = _summary(table).loc[heat.index, "beta_star"].to_numpy()
    return bool(((grid[i - 1] <= star) & (star <= grid[i + 1])).all())


def test_beta_star_of_a_two_level_system() -> None:
    assert X_STAR == pytest.approx(2.39936, abs=1e-5)
    # 97 gaps put the analytic peak x*/Δ at every offset between the grid points from 0.07 to 15.
    targets = np.exp(np.linspace(math.log(0.07), math.log(15.0), 97))
    gaps = (X_STAR / targets).tolist()
    betas = beta_grid()
    table = thermo_table(_two_level(gaps), checkpoint=3, betas=betas)
    errors = _relative_errors(table, targets)
    # The refined β* (an exact three-point stencil a quarter step wide around the grid vertex): its
    # error falls as the stencil's spacing squared, measured at most 1.5e-4 here.
    assert errors["refined"].max() < 1e-3, errors["refined"].max()
    # The grid parabola alone (skew of C(ln β) times the squared step, up to 0.128 in ln β): 2.5e-3;
    # the grid point alone is off by up to half a step (6%).
    assert errors["parabola"].max() > 2e-3 and errors["refined"].max() < errors["parabola"].max() / 8
    assert errors["argmax"].max() > 3e-2
    assert _inside_neighbours(table)
    # A coarse grid (31 points, steps up to 0.26 in ln β): the grid parabola is off by 1e-2, the refined
    # β* stays within 1e-3 (its stencil is a quarter of the wider step: four times the error above).
    coarse = thermo_table(_two_level(gaps), checkpoint=3, betas=beta_grid(0.05, 20.0, 31))
    errors = _relative_errors(coarse, targets)
    assert errors["refined"].max() < 1e-3 and errors["parabola"].max() > 5e-3, errors
    assert _inside_neighbours(coarse)
    summary = _summary(table)
    grid = betas.numpy()
    for head, gap in enumerate(gaps):
        heat = _two_level_heat(grid, gap)
        assert summary.loc[head, "beta_star_censored"] == 0 and np.isnan(summary.loc[head, "beta_star_bound"])
        assert summary.loc[head, "heat_capacity_max"] == pytest.approx(heat.max(), rel=1e-12)
        sweep = table[(table["quantity"] == "heat_capacity") & (table["head"] == head)]
        np.testing.assert_allclose(sweep["value"].to_numpy(), heat, rtol=1e-10, atol=1e-14)


def _degenerate_heat(beta: np.ndarray | float, gap: float, g: int) -> np.ndarray:
    """C of a row with one ground state and ``g`` keys ``gap`` above it: ``x² p (1 − p)``, ``x = βΔ``,
    ``p = g e⁻ˣ / (1 + g e⁻ˣ)`` the mass on the excited keys."""
    x = np.asarray(beta) * gap
    p = g * np.exp(-x) / (1 + g * np.exp(-x))
    return x**2 * p * (1 - p)


def test_refinement_of_flat_and_skewed_peaks_stays_between_the_neighbours() -> None:
    # Each head has two rows, one ground state and 255 keys Δ above it, and the same with Δ·r: C̄ is the
    # mean of two narrow peaks r apart, a flat or skewed top for r ≈ 1.4-1.6 where the grid parabola is
    # off by up to 2e-2 and the first stencil's vertex moves far from its centre: those heads take a
    # second (or third) stencil. β* is the maximum of the analytic C̄ (bounded search between the grid
    # maximum's neighbours) within 1e-3 for every r, and never leaves those neighbours.
    g, ratios = 255, np.linspace(1.1, 3.0, 39)
    base = 0.7 * np.exp(np.linspace(0.0, 0.2, len(ratios)))
    gaps = torch.tensor(np.stack([base, base * ratios], axis=-1)).reshape(1, 1, -1, 2, 1)
    scores = torch.cat([torch.zeros_like(gaps), (-gaps).expand(-1, -1, -1, -1, g)], dim=-1)
    betas = beta_grid()
    table = thermo_table(scores, checkpoint=0, betas=betas)
    assert _inside_neighbours(table)
    star = _summary(table)["beta_star"].to_numpy()
    heat = table[table["quantity"] == "heat_capacity"].pivot(index="head", columns="beta", values="value")
    heat = heat.to_numpy()
    count = torch.full((1, 1, len(ratios)), 2)  # valid rows per [layer, prompt, head]
    buffer = weights_buffer(2**15, 3, 2**18, torch.device("cpu"))
    refined = refine_peak(scores, betas, torch.tensor(heat)[None], count, 2**15, buffer)
    np.testing.assert_allclose(refined.beta_star[0].numpy(), star, rtol=1e-12)
    assert (refined.passes[0] >= 2).any() and (refined.passes[0] >= 1).all()
    parabola, _, _ = thermo.peak_beta(torch.tensor(heat), betas)
    u = np.log(betas.numpy())
    worst = {"refined": 0.0, "parabola": 0.0}
    for head, gap in enumerate(base):

        def minus_heat(log_beta: float, gap: float = gap, ratio: float = ratios[head]) -> float:
            beta = np.exp(log_beta)
            return -float(_degenerate_heat(beta, gap, g) + _degenerate_heat(beta, gap * ratio, g)) / 2

        i = heat[head].argmax()
        bounds = (u[i - 1], u[i + 1])
        exact = np.exp(
            minimize_scalar(minus_heat, bounds=bounds, method="bounded", options={"xatol": 1e-10}).x
        )
        worst["refined"] = max(worst["refined"], abs(star[head] / exact - 1))
        worst["parabola"] = max(worst["parabola"], abs(float(parabola[head]) / exact - 1))
    assert worst["refined"] < 1e-3 and worst["parabola"] > 1e-2, worst


def test_parabola_vertex_on_uneven_points() -> None:
    # Exact for any parabola through three uneven points, its maximum or minimum; a convex or level
    # triple steps to its higher end (or stays in the middle when level).
    u = torch.tensor(
        [[0.0, 0.3, 1.0], [-2.0, -1.9, -1.5], [0.0, 0.3, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64
    )
    top = torch.tensor([0.45, -3.0, 1.7, 0.0], dtype=torch.float64).unsqueeze(-1)
    f = -((u - top) ** 2)
    f[2] = -f[2]  # convex: no maximum
    f[3] = 5.0  # level
    vertex, concave = parabola_vertex(u, f)
    torch.testing.assert_close(vertex[:2], top[:2, 0], rtol=1e-12, atol=1e-12)
    assert concave.tolist() == [True, True, False, False]
    assert vertex[2] == 0.0 and vertex[3] == 1.0  # the higher end (f(0) > f(1) for the convex one)


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


def test_refined_beta_star_of_a_real_tiny_model_is_the_fine_grid_maximum() -> None:
    # A real HookedTransformer's scores (8x sharper than its near-uniform initial ones, so every head
    # peaks inside the grid): each head's β* is the maximum of C̄ evaluated directly (row_thermo, the
    # exact form, averaged over the rows with n >= 2) on a grid of steps 1e-4 in ln β around it.
    from phasescope.analysis.inputs import repeated_random_tokens
    from phasescope.analysis.run import capture_attention
    from tests.helpers import tiny_model

    probe = repeated_random_tokens(6, 4, 12, 0, None)
    _, scores = capture_attention(tiny_model(), probe.tokens, want_logits=False)
    scores = 8 * scores
    table = thermo_table(scores, checkpoint=0)
    rows = table[table["quantity"] == "beta_star"]
    table_star = {(int(r.layer), int(r.head)): float(r.value) for r in rows.itertuples()}
    assert len(table_star) == 4 and all(math.isfinite(v) for v in table_star.values())
    for (layer, head), star in table_star.items():
        fine = star * torch.linspace(-0.05, 0.05, 1001, dtype=torch.float64).exp()
        heat = row_thermo(scores[layer, :, head], fine)["heat_capacity"][:, :, 1:]  # query 0: one key
        heat = heat.mean(dim=(1, 2))
        top = int(heat.argmax())
        assert 0 < top < len(fine) - 1  # a maximum inside the window, not its edge
        assert star == pytest.approx(float(fine[top]), rel=1e-3), (layer, head, star, float(fine[top]))
