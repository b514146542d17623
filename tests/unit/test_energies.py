"""Attention energy histograms: counts, masking, the row-offset gauge, Hopfield regimes."""

from __future__ import annotations

import math

import pytest
import torch

from phasescope.errors import MeasureError
from phasescope.measures.energies import HOPFIELD_REGIMES, energy_edges, energy_histogram, energy_table
from phasescope.measures.entropy import entropy_table


def causal(scores: torch.Tensor) -> torch.Tensor:
    q, k = scores.shape[-2:]
    return scores.masked_fill(torch.ones(q, k, dtype=torch.bool).triu(1), -math.inf)


def random_scores(seed: int = 0, shape: tuple[int, ...] = (2, 3, 4, 6)) -> torch.Tensor:
    """``[layer, batch, head, seq, seq]`` causal scores with a random offset per row."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, shape[-1], generator=gen, dtype=torch.float64)
    return causal(s + 3 * torch.randn(*shape, 1, generator=gen, dtype=torch.float64))


def test_counts_cover_every_allowed_entry_and_never_a_masked_one() -> None:
    scores = random_scores()
    counts, below, above = energy_histogram(scores, energy_edges(scores, 20))
    allowed_per_head = 3 * (6 * 7 // 2)  # batch × causal entries of a 6×6 pattern
    assert torch.equal(counts.sum(-1), torch.full((2, 4), float(allowed_per_head), dtype=torch.float64))
    assert below.sum() == 0 and above.sum() == 0
    # Narrow edges: what falls outside is counted beside the bins, so nothing is lost.
    counts, below, above = energy_histogram(scores, torch.linspace(-1.0, 1.0, 5, dtype=torch.float64))
    assert torch.equal(
        counts.sum(-1) + below + above, torch.full((2, 4), float(allowed_per_head), dtype=torch.float64)
    )
    assert below.sum() > 0 and above.sum() > 0


def test_known_energies_land_in_known_bins() -> None:
    # One head, one prompt: rows [0 | −inf] and [1, 2] → energies 0, −1, −2.
    scores = torch.tensor([[[[[0.0, -math.inf], [1.0, 2.0]]]]], dtype=torch.float64)
    edges = torch.tensor([-2.5, -1.5, -0.5, 0.5], dtype=torch.float64)
    counts, below, above = energy_histogram(scores, edges)
    assert counts.flatten().tolist() == [1.0, 1.0, 1.0]
    # The last edge is inclusive: an energy exactly on it is counted, not lost.
    counts, _, above = energy_histogram(scores, torch.tensor([-2.0, -1.0, 0.0], dtype=torch.float64))
    assert counts.flatten().tolist() == [1.0, 2.0] and above.item() == 0


def test_row_min_reference_is_blind_to_row_offsets() -> None:
    scores = random_scores(1)
    shifted = scores + 7 * torch.randn(*scores.shape[:-1], 1, dtype=torch.float64)
    tight = energy_edges(scores, 10, "row_min")
    assert tight[0] == 0  # every row's ground state sits at zero
    # Bins with a margin: the shift moves energies by rounding errors, which must not cross an edge.
    edges = torch.linspace(-0.25, float(tight[-1]) + 0.25, 11, dtype=torch.float64)
    a, *_ = energy_histogram(scores, edges, "row_min")
    b, *_ = energy_histogram(shifted, edges, "row_min")
    assert torch.equal(a, b)
    raw_a, *_ = energy_histogram(scores, energy_edges(scores, 10))
    raw_b, *_ = energy_histogram(shifted, energy_edges(scores, 10))
    assert not torch.equal(raw_a, raw_b)
    with pytest.raises(ValueError, match="reference"):
        energy_edges(scores, 10, "mean")  # type: ignore[arg-type]


def test_table_quantities_moments_and_regimes() -> None:
    scores = random_scores(2)
    table = energy_table(scores, 300, n_bins=8)
    assert not table["value"].isna().any() and (table["measure"] == "energies").all()
    hist = table[table["quantity"] == "energy_hist"]
    assert len(hist) == 2 * 4 * 8 and hist["x"].notna().all() and hist["index"].between(0, 7).all()
    # Bin centres increase with the bin index, the same for every head.
    one = hist[(hist["layer"] == 0) & (hist["head"] == 0)].sort_values("index")
    assert one["x"].is_monotonic_increasing

    finite = scores[0, :, 1][torch.isfinite(scores[0, :, 1])]
    mean = table[(table["quantity"] == "energy_mean") & (table["layer"] == 0) & (table["head"] == 1)][
        "value"
    ].item()
    std = table[(table["quantity"] == "energy_std") & (table["layer"] == 0) & (table["head"] == 1)][
        "value"
    ].item()
    assert mean == pytest.approx(float(-finite.mean()), rel=1e-12)
    assert std == pytest.approx(float(finite.std(unbiased=False)), rel=1e-12)

    ours = table[table["quantity"] == "hopfield_regime"].sort_values(["layer", "head"])["value"].to_numpy()
    ref = entropy_table(scores, 300)
    theirs = ref[ref["quantity"] == "hopfield_regime"].sort_values(["layer", "head"])["value"].to_numpy()
    assert (ours == theirs).all()


def test_uniform_heads_average_globally_and_one_hot_heads_sit_in_a_fixed_point() -> None:
    n = 8
    uniform = causal(torch.zeros(1, 2, 1, n, n, dtype=torch.float64))
    one_hot = causal(torch.zeros(1, 2, 1, n, n, dtype=torch.float64) + 50 * torch.eye(n, dtype=torch.float64))
    scores = torch.cat([uniform, one_hot], dim=2)  # head 0 uniform, head 1 one-hot on the diagonal
    table = energy_table(scores, 0, n_bins=4)
    regime = table[table["quantity"] == "hopfield_regime"].sort_values("head")["value"].tolist()
    assert [HOPFIELD_REGIMES[int(r)] for r in regime] == ["global_averaging", "fixed_point"]


def test_bad_input_is_refused() -> None:
    with pytest.raises(MeasureError, match="layer, batch, head"):
        energy_table(torch.zeros(3, 3), 0)
    with pytest.raises(MeasureError, match="no allowed"):
        energy_edges(torch.full((1, 1, 1, 2, 2), -math.inf))
