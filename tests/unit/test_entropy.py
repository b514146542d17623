"""Attention entropy against analytic rows (docs/measures.md, "Entropy")."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from phasescope.errors import MeasureError
from phasescope.measures.entropy import HOPFIELD_REGIMES, entropy_table, row_entropy
from phasescope.measures.tables import BASE_COLUMNS


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _causal(scores: torch.Tensor) -> torch.Tensor:
    """Mask keys j > i of ``[..., query, key]`` scores with -inf."""
    q, k = scores.shape[-2:]
    return scores.masked_fill(torch.ones(q, k, dtype=torch.bool).triu(1), -math.inf)


def _random_causal(seed: int, shape: tuple[int, ...] = (2, 3, 4, 7), scale: float = 2.0) -> torch.Tensor:
    """``[layer, batch, head, seq, seq]`` float64 causal scores with a random offset per row."""
    gen = _gen(seed)
    s = scale * torch.randn(*shape, shape[-1], generator=gen, dtype=torch.float64)
    return _causal(s + 5 * torch.randn(*shape, 1, generator=gen, dtype=torch.float64))


def test_uniform_rows_have_entropy_ln_n_and_normalised_one() -> None:
    # Identity 1: rows of equal scores (a random level per row), n = 1..6 keys by causal masking.
    level = torch.randn(3, 6, 1, generator=_gen(0), dtype=torch.float64)
    out = row_entropy(_causal(level.expand(3, 6, 6)))
    n = torch.arange(1, 7, dtype=torch.float64).expand(3, 6)
    torch.testing.assert_close(out["entropy"], n.log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(out["n_keys"], n.long())
    torch.testing.assert_close(
        out["entropy_norm"][:, 1:], torch.ones(3, 5, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert out["entropy_norm"][:, 0].isnan().all()  # one key: excluded, not 0/0 reported as a number
    torch.testing.assert_close(out["k90"], torch.ceil(0.9 * n))


def test_one_hot_row_has_zero_entropy() -> None:
    # Identity 1: one score far above the rest puts all the mass on one key.
    s = torch.randn(4, 9, generator=_gen(1), dtype=torch.float64)
    s[torch.arange(4), torch.tensor([0, 3, 5, 8])] += 1e3
    out = row_entropy(s)
    assert out["entropy"].abs().max() < 1e-12
    assert out["entropy_norm"].abs().max() < 1e-12
    assert (out["k90"] == 1).all()


def test_entropy_equals_softmax_entropy_under_causal_masks() -> None:
    # Identity 2 at β = 1: against torch.distributions, which handles -inf logits its own way.
    s = _random_causal(2)
    out = row_entropy(s)
    expected = torch.distributions.Categorical(logits=s).entropy()
    torch.testing.assert_close(out["entropy"], expected, rtol=1e-12, atol=1e-12)
    assert not any(v.isnan().any() for k, v in out.items() if k != "entropy_norm")
    assert out["entropy_norm"].isnan().sum() == s.shape[0] * s.shape[1] * s.shape[2]  # position 0 only


def test_row_constant_leaves_entropy_and_k90_unchanged() -> None:
    # Identity 5, entropy side: p depends only on score differences within a row.
    s = _random_causal(3)
    shift = 40 * torch.randn(*s.shape[:-1], 1, generator=_gen(4), dtype=torch.float64)
    a, b = row_entropy(s), row_entropy(s + shift)
    torch.testing.assert_close(a["entropy"], b["entropy"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a["k90"], b["k90"])


@pytest.mark.parametrize(
    ("probs", "k90"),
    [
        ([0.5, 0.3, 0.15, 0.05], 3),
        ([0.05, 0.15, 0.5, 0.3], 3),  # order of keys does not matter
        ([0.9, 0.1], 1),  # exactly 90% on one key counts one key
        ([0.25, 0.25, 0.25, 0.25], 4),
        ([0.1] * 10, 9),  # nine keys hold exactly 90%
        ([0.6, 0.4, 0.0, 0.0], 2),  # the zeros are masked keys (-inf scores)
        ([1.0], 1),
    ],
)
def test_k90_on_hand_built_rows(probs: list[float], k90: int) -> None:
    p = torch.tensor(probs, dtype=torch.float64)
    scores = torch.where(p > 0, p.log(), -math.inf) + 7.0
    out = row_entropy(scores)
    assert out["k90"].item() == k90
    assert out["n_keys"].item() == int((p > 0).sum())


def test_float32_input_is_computed_in_float64() -> None:
    s = torch.randn(3, 5, generator=_gen(5))
    out = row_entropy(s)
    assert out["entropy"].dtype == torch.float64
    torch.testing.assert_close(out["entropy"], row_entropy(s.double())["entropy"], rtol=0, atol=0)


def test_rows_without_keys_and_bad_shapes_are_refused() -> None:
    s = torch.zeros(2, 3, dtype=torch.float64) + torch.randn(2, 3, generator=_gen(6), dtype=torch.float64)
    s[1] = -math.inf
    with pytest.raises(MeasureError):
        row_entropy(s)
    with pytest.raises(MeasureError):
        entropy_table(torch.randn(2, 3, 4, generator=_gen(7)), checkpoint=0)


def _regime_scores(seq: int = 32) -> torch.Tensor:
    """``[1, 2, 3, seq, seq]`` causal scores: a uniform head, a previous-token head, a 4-recent-keys head."""
    gen = _gen(8)
    noise = 1e-3 * torch.randn(1, 2, 3, seq, seq, generator=gen, dtype=torch.float64)
    i = torch.arange(seq).unsqueeze(1)
    j = torch.arange(seq).unsqueeze(0)
    s = noise.clone()
    s[:, :, 1] += 20.0 * (j == (i - 1).clamp(min=0))
    s[:, :, 2] += 20.0 * ((j <= i) & (j > i - 4))
    return _causal(s)


def test_entropy_table_shapes_dtypes_and_no_nan() -> None:
    s = _random_causal(9).float()
    layers, batch, heads, seq = s.shape[:4]
    table = entropy_table(s, checkpoint=40)
    assert list(table.columns) == BASE_COLUMNS + ["position", "index", "se", "ci_lo", "ci_hi"]
    assert (table["measure"] == "entropy").all() and (table["checkpoint"] == 40).all()
    assert table["value"].dtype == "float64" and str(table["position"].dtype) == "Int64"
    assert not table["value"].isna().any()
    counts = table["quantity"].value_counts()
    per_head = layers * heads
    assert counts["entropy"] == counts["k90"] == per_head * seq
    assert counts["entropy_norm"] == per_head * (seq - 1)  # position 0 has one key: no row
    assert not (table.query("quantity == 'entropy_norm'")["position"] == 0).any()
    for q in ("entropy_mean", "entropy_norm_mean", "k90_mean", "k90_frac_mean", "hopfield_regime"):
        rows = table[table["quantity"] == q]
        assert len(rows) == per_head and rows["position"].isna().all()
        # Only entropy_mean carries an uncertainty (docs/measures.md, "Uncertainties").
        assert rows["se"].notna().all() == (q == "entropy_mean") and rows["index"].isna().all()
    assert counts["entropy_mean_prompt"] == per_head * batch and counts["entropy_mean_chi"] == per_head


def test_entropy_mean_pools_its_prompt_rows_weighted_by_valid_rows() -> None:
    # A padded prompt (fewer valid rows) makes the weights unequal: entropy_mean = Σ N_p S_p / Σ N_p.
    s = _random_causal(12)
    s[:, 1, :, 4:, :] = -math.inf
    s[:, 1, :, 4:, 0] = 0.0  # rows 4.. of prompt 1 have one key: no row (n < 2)
    table = entropy_table(s, checkpoint=1)
    rows = table[table["quantity"] == "entropy_mean_prompt"]
    n_rows = torch.full((s.shape[1],), s.shape[3] - 1.0)
    n_rows[1] = 3.0  # queries 1, 2, 3
    weights = pd.Series(n_rows.numpy(), name="w")
    merged = rows.join(weights, on="index")
    pooled = (merged["value"] * merged["w"]).groupby(
        [merged["layer"], merged["head"]]
    ).sum() / n_rows.sum().item()
    got = table[table["quantity"] == "entropy_mean"].set_index(["layer", "head"])["value"]
    pd.testing.assert_series_equal(got, pooled, check_names=False, rtol=1e-12)
    chi = table[table["quantity"] == "entropy_mean_chi"].set_index(["layer", "head"])["value"]
    var = rows.groupby(["layer", "head"])["value"].var(ddof=1) * n_rows.mean().item()
    pd.testing.assert_series_equal(chi, var, check_names=False, rtol=1e-9)


def test_entropy_table_averages_match_rows() -> None:
    s = _random_causal(10)
    table = entropy_table(s, checkpoint=0)
    rows = row_entropy(s)
    layer, head, pos = 1, 2, 4
    got = table.query(f"quantity == 'entropy' and layer == {layer} and head == {head} and position == {pos}")
    assert got["value"].item() == pytest.approx(rows["entropy"][layer, :, head, pos].mean().item(), abs=1e-12)
    mean = table.query(f"quantity == 'entropy_norm_mean' and layer == {layer} and head == {head}")
    expected = rows["entropy_norm"][layer, :, head, 1:].mean().item()  # rows with n >= 2 only
    assert mean["value"].item() == pytest.approx(expected, abs=1e-12)


def test_hopfield_regimes_of_constructed_heads() -> None:
    table = entropy_table(_regime_scores(), checkpoint=0)
    regime = table[table["quantity"] == "hopfield_regime"].set_index("head")["value"]
    names = {h: HOPFIELD_REGIMES[int(v)] for h, v in regime.items()}
    assert names == {0: "global_averaging", 1: "fixed_point", 2: "metastable"}
    k90 = table[table["quantity"] == "k90_mean"].set_index("head")["value"]
    assert k90[1] == pytest.approx(1.0)
