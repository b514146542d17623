"""Fluctuations over prompts (docs/measures.md, "Uncertainties and susceptibility"): χ and standard
errors against distributions with known variance, and the per-prompt rows of every measure against the
pooled values the measures report, on a tiny real HookedTransformer."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from phasescope.measures.fluctuations import fluctuations, resample_counts
from tests.helpers import tiny_model

SIGMA = 0.7


def _unit_means(draws: int, n_prompts: int, n_units: int, seed: int) -> torch.Tensor:
    """``[draws, prompt]`` means of ``n_units`` iid normal units of standard deviation SIGMA."""
    gen = torch.Generator().manual_seed(seed)
    units = 3.0 + SIGMA * torch.randn(draws, n_prompts, n_units, generator=gen, dtype=torch.float64)
    return units.mean(-1)


def test_chi_of_iid_units_is_their_variance_within_its_bootstrap_band() -> None:
    # m_p averages N iid units of variance σ²: Var(m_p) = σ²/N, so χ = N·Var(m_p) = σ² for any N.
    for n_units in (4, 32):
        fl = fluctuations(_unit_means(1, 256, n_units, seed=n_units)[0], units=float(n_units))
        assert abs(float(fl.chi) - SIGMA**2) < 3 * float(fl.chi_se), (n_units, fl)
        # The bootstrap SE of χ ≈ the sampling SD of a variance, σ²·√(2/(n−1)) for normal values.
        assert float(fl.chi_se) == pytest.approx(SIGMA**2 * math.sqrt(2 / 255), rel=0.3)
        # The standard error of the pooled mean ≈ σ/√(nN); the 95% interval ≈ ±1.96 of it.
        true_se = SIGMA / math.sqrt(256 * n_units)
        assert float(fl.se) == pytest.approx(true_se, rel=0.15)
        assert float(fl.ci_hi - fl.ci_lo) == pytest.approx(2 * 1.96 * true_se, rel=0.25)
        assert float(fl.chi_lo) < float(fl.chi) < float(fl.chi_hi)


def test_chi_interval_and_mean_interval_cover_the_truth_at_about_their_rate() -> None:
    # 400 seeded experiments of 64 prompts in one vectorised call (leading axis = experiment).
    values = _unit_means(400, 64, 8, seed=11)
    fl = fluctuations(values, units=8.0)
    chi_cover = ((fl.chi_lo <= SIGMA**2) & (SIGMA**2 <= fl.chi_hi)).double().mean().item()
    mean_cover = ((fl.ci_lo <= 3.0) & (3.0 <= fl.ci_hi)).double().mean().item()
    # Percentile intervals of 64 samples undercover a little; 0.95 nominal.
    assert 0.86 < chi_cover <= 1.0, chi_cover
    assert 0.88 < mean_cover <= 1.0, mean_cover
    # χ is unbiased over experiments (ddof = 1), within 4 of its standard errors over 400 of them.
    spread = fl.chi.std() / math.sqrt(400)
    assert abs(fl.chi.mean().item() - SIGMA**2) < 4 * spread.item()


def test_correlated_units_raise_chi_and_weights_follow_unit_counts() -> None:
    # Units sharing a per-prompt offset of variance τ²: χ = σ² + N τ² (the fluctuation form's growth).
    gen = torch.Generator().manual_seed(3)
    n, N, tau = 400, 16, 0.3
    offsets = tau * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    units = SIGMA * torch.randn(n, N, generator=gen, dtype=torch.float64) + offsets
    fl = fluctuations(units.mean(-1), units=float(N))
    expected = SIGMA**2 + N * tau**2
    assert abs(float(fl.chi) - expected) < 3 * float(fl.chi_se)
    # Unequal unit counts: the pooled value is Σ N_p m_p / Σ N_p; a NaN prompt is left out.
    values = torch.tensor([1.0, 2.0, float("nan"), 4.0], dtype=torch.float64)
    counts = torch.tensor([1.0, 3.0, 5.0, 4.0], dtype=torch.float64)
    fl = fluctuations(values, counts)
    assert float(fl.mean) == pytest.approx((1 + 6 + 16) / 8)
    assert int(fl.n_prompts) == 3
    assert float(fl.chi) == pytest.approx(8 / 3 * torch.tensor([1.0, 2.0, 4.0]).var().item())


def test_fewer_than_two_prompts_have_no_spread_and_resamples_are_seeded() -> None:
    fl = fluctuations(torch.tensor([2.0]), units=3.0)
    assert float(fl.mean) == 2.0 and math.isnan(float(fl.se)) and math.isnan(float(fl.chi))
    a, b = resample_counts(10, 50, seed=4), resample_counts(10, 50, seed=4)
    assert torch.equal(a, b) and bool((a.sum(-1) == 10).all())
    assert not torch.equal(a, resample_counts(10, 50, seed=5))


# --- per-prompt rows of the measures equal the pooled values they report ------------------------------


@pytest.fixture(scope="module")
def forward() -> dict:
    """A tiny attention-only HookedTransformer on blocks of 4 repeated once (8 tokens), 6 prompts."""
    from phasescope.analysis.inputs import repeated_random_tokens
    from phasescope.analysis.run import capture_attention

    model = tiny_model()
    probe = repeated_random_tokens(6, 4, 12, 0, None)
    logits, scores = capture_attention(model, probe.tokens, want_logits=True)
    return {"tokens": probe.tokens, "logits": logits, "scores": scores}


def _rows(table: pd.DataFrame, quantity: str) -> pd.DataFrame:
    return table[table["quantity"] == quantity]


def _per_head(table: pd.DataFrame, quantity: str) -> pd.Series:
    return _rows(table, quantity).set_index(["layer", "head"])["value"]


def _chi_of(prompt_rows: pd.DataFrame, units: float | pd.Series) -> float:
    """N̄ · Var (ddof = 1) of per-prompt rows, computed here with pandas."""
    n_bar = units if isinstance(units, float) else float(units.mean())
    return n_bar * float(prompt_rows["value"].var(ddof=1))


def test_loss_prompt_rows_pool_to_the_loss_weighted_by_targets(forward: dict) -> None:
    from phasescope.measures.loss import loss_table

    tokens = forward["tokens"]
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    mask[2, :5] = False  # prompt 2 has 3 targets, the others 7
    mask[4] = False  # prompt 4 has none: no per-prompt row
    splits = {"train": torch.tensor([True, True, True, False, False, False])}
    table = loss_table(forward["logits"], tokens, mask, splits, checkpoint=7)
    targets = pd.Series(mask.sum(1).double().numpy())
    for q in ("loss", "accuracy", "loss_train", "accuracy_train"):
        pooled = _rows(table, q)
        per = _rows(table, f"{q}_prompt").set_index("index")["value"]
        split = [0, 1, 2] if q.endswith("train") else [0, 1, 2, 3, 5]
        assert list(per.index) == split
        weights = targets[split]
        assert float(pooled["value"].iloc[0]) == pytest.approx(
            float((per * weights).sum() / weights.sum()), rel=1e-12
        )
        chi = _rows(table, f"{q}_chi")
        assert float(chi["value"].iloc[0]) == pytest.approx(
            _chi_of(_rows(table, f"{q}_prompt"), weights), rel=1e-9
        )
        for column in ("se", "ci_lo", "ci_hi"):
            assert pooled[column].notna().all() and chi[column].notna().all()
        assert (pooled["ci_lo"] <= pooled["value"]).all() and (pooled["value"] <= pooled["ci_hi"]).all()
    # loss_se keeps its meaning (every prompt, unweighted) for compatibility.
    assert _rows(table, "loss_se")["se"].isna().all()


def test_head_scores_are_the_mean_of_their_prompt_rows(forward: dict) -> None:
    from phasescope.measures.heads import heads_table

    patterns = torch.softmax(forward["scores"].double(), dim=-1)
    table = heads_table(patterns, period=4, checkpoint=7)
    units = {"induction_score": 4.0, "prev_token_score": 7.0}  # queries of the second copy; i >= 1
    for q, n_units in units.items():
        per = _rows(table, f"{q}_prompt")
        assert len(per) == 2 * 2 * 6 and sorted(per["index"].unique()) == list(range(6))
        mean = per.groupby(["layer", "head"])["value"].mean()
        pd.testing.assert_series_equal(_per_head(table, q), mean, check_names=False, rtol=1e-12)
        chi = per.groupby(["layer", "head"])["value"].var(ddof=1) * n_units
        pd.testing.assert_series_equal(_per_head(table, f"{q}_chi"), chi, check_names=False, rtol=1e-9)
        se = per.groupby(["layer", "head"])["value"].std(ddof=1) / math.sqrt(6)
        got = _rows(table, q).set_index(["layer", "head"])["se"]
        pd.testing.assert_series_equal(got, se, check_names=False, rtol=1e-9)


def test_entropy_and_stable_rank_are_the_mean_of_their_prompt_rows(forward: dict) -> None:
    from phasescope.measures.entropy import entropy_table
    from phasescope.measures.spectra import spectra_table
    from phasescope.measures.thermo import thermo_table

    scores = forward["scores"]
    tables = {
        "entropy_mean": (entropy_table(scores, 7), 7.0),  # every prompt: queries 1..7 have n >= 2 keys
        "stable_rank": (spectra_table(torch.softmax(scores.double(), dim=-1), {}, 7), 8.0),  # query rows
    }
    for q, (table, n_units) in tables.items():
        per = _rows(table, f"{q}_prompt")
        assert len(per) == 2 * 2 * 6
        groups = per.groupby(["layer", "head"])["value"]
        pd.testing.assert_series_equal(_per_head(table, q), groups.mean(), check_names=False, rtol=1e-12)
        chi = groups.var(ddof=1) * n_units
        pd.testing.assert_series_equal(_per_head(table, f"{q}_chi"), chi, check_names=False, rtol=1e-9)
        assert _rows(table, q)["se"].notna().all()
    # β* per prompt exists for the heads and prompts whose C(β) peaks inside the grid; χ is over those.
    table = thermo_table(scores * 8, 7)  # sharper scores than the tiny model's near-uniform ones
    per = _rows(table, "beta_star_prompt")
    assert len(per) > 0 and per["value"].between(0.05, 20.0).all()
    counted = per.groupby(["layer", "head"])["value"]
    chi = _per_head(table, "beta_star_chi")
    expected = (counted.var(ddof=1) * 7.0).dropna()
    pd.testing.assert_series_equal(chi.loc[expected.index], expected, check_names=False, rtol=1e-9)


def test_per_head_prompt_rows_are_capped_but_chi_uses_every_prompt() -> None:
    from phasescope.measures.fluctuations import PROMPT_ROWS_PER_HEAD
    from phasescope.measures.heads import heads_table, induction_scores_per_prompt

    n = PROMPT_ROWS_PER_HEAD + 44
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(1, n, 2, 8, 8, generator=gen, dtype=torch.float64)
    scores = scores.masked_fill(torch.ones(8, 8, dtype=torch.bool).triu(1), -math.inf)
    patterns = torch.softmax(scores, dim=-1)
    table = heads_table(patterns, period=4, checkpoint=0)
    per = _rows(table, "induction_score_prompt")
    kept = sorted(per[per["head"] == 0]["index"])
    assert len(kept) == PROMPT_ROWS_PER_HEAD and kept[0] == 0 and kept[-1] == n - 1  # evenly spaced
    every = induction_scores_per_prompt(patterns, 4)[0]  # [prompt, head]
    got = per[per["head"] == 1].set_index("index")["value"]
    torch.testing.assert_close(torch.tensor(got.to_numpy()), every[torch.tensor(kept), 1], rtol=1e-12, atol=0)
    chi = _per_head(table, "induction_score_chi")
    torch.testing.assert_close(torch.tensor(chi.to_numpy()), 4.0 * every.var(dim=0), rtol=1e-9, atol=0)


def test_one_prompt_has_a_value_but_no_spread_and_no_chi_row(forward: dict) -> None:
    from phasescope.measures.loss import loss_table

    tokens = forward["tokens"][:1]
    mask = torch.ones_like(tokens, dtype=torch.bool)
    table = loss_table(forward["logits"][:1], tokens, mask, {}, checkpoint=0)
    assert _rows(table, "loss")["se"].isna().all() and len(_rows(table, "loss_prompt")) == 1
    assert len(_rows(table, "loss_chi")) == 0
    assert set(table[table["value"].isna()]["quantity"]) == {"loss_se"}  # as before per-prompt rows
