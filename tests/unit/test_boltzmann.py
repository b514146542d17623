"""The fast path of the entropy and thermo tables against the exact forms, on adversarial rows.

Every shortcut of ``phasescope.measures.boltzmann`` (multiplications for exponentials on equal-step
runs of β, the three one-pass sums, ``ln Z'`` of a product of rows, query blocks) is checked against
direct float64 evaluation: ``row_thermo`` (one ``exp`` per β, two-pass centred variance,
``-Σ p ln p``), ``torch.distributions.Categorical`` and a ``torch.sort`` k90, within the bounds
docs/measures.md states ("How the tables are computed").
"""

from __future__ import annotations

import math

import pytest
import torch

from phasescope.measures import boltzmann
from phasescope.measures.boltzmann import boltzmann_sums, slabs, sweep_plan, weights_buffer
from phasescope.measures.entropy import K90_MASS, entropy_table, row_entropy
from phasescope.measures.thermo import ROW_QUANTITIES, beta_grid, row_thermo, thermo_table

EPS = torch.finfo(torch.float64).eps
LOG_GRID = torch.logspace(math.log10(0.05), math.log10(20.0), 61, dtype=torch.float64)
HUGE_BETAS = torch.linspace(1e3, 1e6, 7, dtype=torch.float64)  # equal steps: chained
GRIDS = {"default": beta_grid(), "log (exact fallback)": LOG_GRID, "huge β": HUGE_BETAS}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _adversarial_heads(seed: int = 0, n: int = 24, batch: int = 2) -> torch.Tensor:
    """``[1, batch, 6, n, n]`` causal float64 scores, one kind of hard row per head.

    0 random (scale 3), 1 near-degenerate (spread 1e-9), 2 huge range (scale 1e5), 3 a lone ground
    state with the other keys clustered 10 above it (spread 1e-6: the one-pass variance's worst
    case, ``Var(e) ≈ <e>²/n``), 4 one key per row, 5 random with extra keys masked (padding-like).
    """
    gen = _gen(seed)
    s = torch.randn(1, batch, 6, n, n, generator=gen, dtype=torch.float64)
    s[:, :, 0] *= 3.0
    s[:, :, 1] = 7.0 + 1e-9 * s[:, :, 1]
    s[:, :, 2] *= 1e5
    cluster = -10.0 + 1e-6 * s[:, :, 3]
    ground = torch.zeros(n, n, dtype=torch.bool)
    ground[:, 0] = True  # key 0 is every row's unique ground state
    s[:, :, 3] = torch.where(ground, 0.0, cluster)
    s = s + 5 * torch.randn(1, batch, 6, n, 1, generator=gen, dtype=torch.float64)  # row offsets
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    s = s.masked_fill(causal, -math.inf)
    s[:, :, 4] = torch.where(torch.eye(n, dtype=torch.bool), s[:, :, 4], -math.inf)
    padding = torch.rand(1, batch, n, n, generator=gen) < 0.3
    padding[..., 0] = False  # key 0 stays allowed, so every row keeps a key
    s[:, :, 5] = s[:, :, 5].masked_fill(padding, -math.inf)
    return s


def _direct_sums(e: torch.Tensor, allowed: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """``[row, 3, beta]`` Σw, Σwe, Σwe² with one unclamped ``exp`` per β (the exact form)."""
    w = torch.where(allowed, torch.exp(-betas.reshape(-1, 1, 1) * e), 0.0)  # [beta, row, key]
    return torch.stack([w.sum(-1), (w * e).sum(-1), (w * e * e).sum(-1)], dim=1).permute(2, 1, 0)


def test_sweep_plan_chains_only_equal_steps() -> None:
    # The default grid: one exp, then multiplications (ten rates); a log grid: one exp per β.
    kinds = [k for k, _ in sweep_plan(beta_grid().tolist())]
    assert kinds.count("exp") == 1 and len(kinds) == 61
    assert [k for k, _ in sweep_plan(LOG_GRID.tolist())] == ["exp"] * 61
    # Two equal-step runs, then a lone step (exact exp).
    plan = sweep_plan([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 2.0])
    assert [k for k, _ in plan] == ["exp", "mul", "mul", "mul", "mul", "mul", "exp"]
    assert plan[1][1] == pytest.approx(0.1) and plan[3][1] == pytest.approx(0.2)
    # A long run is restarted by an exact exp every _CHAIN_MAX steps.
    long = [k for k, _ in sweep_plan(torch.linspace(1.0, 200.0, 200).double().tolist())]
    assert long.count("exp") == 4 and max(len(r) for r in "".join(k[0] for k in long).split("e")) == 64


@pytest.mark.parametrize("grid", list(GRIDS))
def test_three_sums_against_direct_exp(grid: str) -> None:
    # Relative error of every sum (all terms >= 0) within (3 + 1.5 j + k)·ε + β·e·ε, j <= 64 chained
    # steps, k = 24 keys, β·e <= 745 for a weight that is not 0 (the direct form has the β·e·ε term
    # too); absolute within k·3.4e-308·(1 + e²) for the weights clamped at exp(-708).
    betas = GRIDS[grid]
    scores = _adversarial_heads(1).reshape(-1, 24, 24)
    for slab in slabs(scores, 2**12):
        buffer = weights_buffer(slab.e.numel(), len(betas), 2**14, slab.e.device)
        fast = boltzmann_sums(slab.e, slab.allowed.double(), sweep_plan(betas.tolist()), buffer)
        exact = _direct_sums(slab.e, slab.allowed, betas)
        floor = 24 * 3.4e-308 * (1 + slab.e.amax() ** 2)
        torch.testing.assert_close(fast, exact, rtol=(3 + 1.5 * 64 + 24 + 2 * 745) * EPS, atol=float(floor))
        assert (fast[:, 0] >= 1 - 1e-15).all()  # Z' >= 1: the ground state's weight is 1


def _row_average(s: torch.Tensor, betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """The exact form of the table's sweep: ``row_thermo`` averaged over rows with n >= 2."""
    rows = row_thermo(s, betas)  # [beta, layer, batch, head, query]
    valid = ((~s.isneginf()).sum(-1) >= 2).double()  # [layer, batch, head, query]
    count = valid.sum(dim=(1, 3))
    return {q: ((v * valid).sum(dim=(2, 4)) / count.clamp(min=1)).permute(1, 2, 0) for q, v in rows.items()}


def _table_sweep(table, quantity: str, shape: tuple[int, int, int]) -> torch.Tensor:
    got = table[table["quantity"] == quantity].sort_values(["layer", "head", "beta"])
    return torch.tensor(got["value"].to_numpy()).reshape(shape)


@pytest.mark.parametrize("grid", list(GRIDS))
def test_thermo_table_equals_exact_row_average_on_adversarial_heads(grid: str) -> None:
    betas = GRIDS[grid]
    s = _adversarial_heads(2)
    table = thermo_table(s, checkpoint=0, betas=betas)
    exact = _row_average(s, betas)
    kept = [0, 1, 2, 3, 5]  # head 4 has one key per row: no thermodynamics, no table rows
    assert set(table["head"]) == set(kept)
    for q in ROW_QUANTITIES:
        got = _table_sweep(table, q, (1, len(kept), len(betas)))
        want = exact[q][:, kept]
        # C: the one-pass variance, within (2n + 1)·(k + 2)·ε relative (docs/measures.md), n = k = 24.
        rtol = 49 * 26 * EPS if q == "heat_capacity" else 1e-12
        torch.testing.assert_close(got, want, rtol=rtol, atol=1e-12)
    assert not table[table["beta"].notna()]["value"].isna().any()


@pytest.mark.parametrize("points", [[0.9, 1.0, 1.1], [0.07, 0.5, 3.0], [1e3, 2e3, 3e3]])
def test_variance_sums_at_a_stencil_equal_the_exact_row_sums(points: list[float]) -> None:
    # The β* refinement's sums (one head's rows at β of its own, chained on equal steps): per prompt,
    # β² Σ Var_row(e) over rows with n >= 2 equals the sum of row_thermo's C over those rows, within
    # the one-pass bound (2n + 1)(k + 2)ε relative, on every adversarial head and for any slab size.
    s = _adversarial_heads(8)
    betas = torch.tensor(points, dtype=torch.float64)
    valid = (~s.isneginf()).sum(-1) >= 2
    exact = torch.where(valid, row_thermo(s, betas)["heat_capacity"], 0.0)  # [β, 1, batch, head, query]
    want = exact.sum(dim=-1)[:, 0].permute(2, 1, 0)  # [head, batch, β]
    for elements in (2**15, 100):
        buffer = weights_buffer(elements, 3, 4 * elements, s.device)
        got = torch.stack([boltzmann.variance_sums(s[0, :, h], points, elements, buffer) for h in range(6)])
        torch.testing.assert_close(got * betas**2, want, rtol=49 * 26 * EPS, atol=1e-12)
    assert want.max() > 0.05 and (want[4] == 0).all()  # not vacuous; one-key rows count for nothing


def test_one_pass_variance_within_its_bound() -> None:
    # The worst case of Var(e) >= p0 <e>² with p0 ~ 1/n: a lone ground state, 127 keys 10 above it
    # spread by 1e-6, at high temperature. The exact form is row_thermo's centred two-pass variance.
    n = 128
    gen = _gen(3)
    s = torch.cat([torch.zeros(1), -10.0 + 1e-6 * torch.randn(n - 1, generator=gen, dtype=torch.float64)])
    s = s.expand(1, 1, 1, 2, n).clone()  # two bidirectional rows of one head
    betas = torch.linspace(0.01, 0.1, 30, dtype=torch.float64)
    table = thermo_table(s, checkpoint=0, betas=betas)
    got = _table_sweep(table, "heat_capacity", (30,))
    exact = row_thermo(s, betas)
    want = exact["heat_capacity"][:, 0, 0, 0, 0]
    mean_e = exact["internal_energy"][:, 0, 0, 0, 0]  # <e> = U, the ground state's score being 0
    assert (want / betas**2 < mean_e**2 / 40).all()  # Var(e) far below <e>²: the subtraction cancels
    assert ((got - want).abs() / want).max() <= (2 * n + 1) * (n + 2) * EPS


def test_table_identities_on_adversarial_heads() -> None:
    # S = β(U - F) on the table's averages, and S(β = 1) = the entropy table's entropy_mean.
    s = _adversarial_heads(4)
    betas = beta_grid()
    table = thermo_table(s, checkpoint=0, betas=betas)
    shape = (1, 5, 61)
    entropy, internal, free = (
        _table_sweep(table, q, shape) for q in ("entropy", "internal_energy", "free_energy")
    )
    torch.testing.assert_close(betas * (internal - free), entropy, rtol=1e-10, atol=1e-10)
    ent = entropy_table(s, checkpoint=0)
    mean = ent[ent["quantity"] == "entropy_mean"].sort_values("head")
    at_one = entropy[0, :, 30]
    torch.testing.assert_close(torch.tensor(mean["value"].to_numpy()), at_one, rtol=0, atol=1e-10)


def test_row_entropy_against_softmax_on_adversarial_rows() -> None:
    s = _adversarial_heads(5)
    rows = row_entropy(s)
    exact = torch.distributions.Categorical(logits=s).entropy()
    torch.testing.assert_close(rows["entropy"], exact, rtol=0, atol=1e-12)
    # k90 equals the count from a full float64 sort of softmax(s), largest first.
    p = torch.softmax(s, dim=-1)
    mass = torch.sort(p, dim=-1, descending=True).values.cumsum(-1)
    k90 = torch.minimum((mass < K90_MASS - 1e-12).sum(-1) + 1, (~s.isneginf()).sum(-1))
    assert torch.equal(rows["k90"], k90.double())
    assert torch.equal(rows["n_keys"], (~s.isneginf()).sum(-1))


def test_blocking_and_slab_size_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _adversarial_heads(6, n=40)
    whole_t = thermo_table(s, checkpoint=0)
    whole_e = row_entropy(s)
    monkeypatch.setattr(boltzmann, "QUERY_BLOCK", 7)
    from phasescope.measures import entropy, thermo

    monkeypatch.setattr(thermo, "_SLAB_ELEMENTS", 300)
    monkeypatch.setattr(thermo, "_BUFFER_ELEMENTS", 900)  # three β per product
    monkeypatch.setattr(entropy, "_SLAB_ELEMENTS", 300)
    small_t = thermo_table(s, checkpoint=0)
    small_e = row_entropy(s)
    torch.testing.assert_close(
        torch.tensor(small_t["value"].to_numpy()),
        torch.tensor(whole_t["value"].to_numpy()),
        rtol=1e-12,
        equal_nan=True,
        atol=1e-12,
    )
    for q in ("entropy", "k90", "n_keys"):
        torch.testing.assert_close(small_e[q], whole_e[q], rtol=1e-13, atol=1e-13)


def test_rows_without_keys_or_with_bad_scores_are_refused() -> None:
    from phasescope.errors import MeasureError

    s = _adversarial_heads(7)
    for bad in (-math.inf, math.nan, math.inf):
        broken = s.clone()
        broken[0, 0, 0, 3, :] = bad
        with pytest.raises(MeasureError):
            thermo_table(broken, checkpoint=0)
        with pytest.raises(MeasureError):
            row_entropy(broken)
