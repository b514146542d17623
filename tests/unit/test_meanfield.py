"""The mean-field check (docs/measures.md, "Mean-field check"): a random-init wide layer is Gaussian
within the KS bound, a sparsified one is not; the KS distance and moments on analytic samples; a model
without MLPs; and the three field measures on a local Hugging Face model."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from phasescope.analysis.inputs import Batch
from phasescope.analysis.run import measure_checkpoint
from phasescope.measures.meanfield import HIST_BINS, ks_gaussian, preact_stats
from phasescope.models.loading import LoadedModel, ModelRef
from phasescope.schemas import InputSpec
from tests.helpers import hf_gpt2, save_hf_model

D_MLP = 4096


def _wide(attn_only: bool = False) -> HookedTransformer:
    """One block of 4,096 ReLU neurons after a LayerNorm, TransformerLens's own initialisation."""
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=64,
        n_heads=2,
        d_head=32,
        d_mlp=None if attn_only else D_MLP,
        d_vocab=50,
        n_ctx=16,
        act_fn="relu",
        attn_only=attn_only,
        dtype=torch.float64,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(cfg).eval()


def _meanfield(model: HookedTransformer) -> pd.DataFrame:
    tokens = torch.randint(0, 50, (8, 16), generator=torch.Generator().manual_seed(0))
    loaded = LoadedModel(ModelRef("built", "series", "built"), 0, model)
    batch = Batch(tokens, torch.ones_like(tokens, dtype=torch.bool))
    return measure_checkpoint(loaded, ["meanfield"], InputSpec(), batch=batch)


def _scalars(table: pd.DataFrame) -> dict[str, float]:
    rows = table[table["quantity"] != "preact_hist"]
    return dict(zip(rows["quantity"], rows["value"], strict=True))


def test_a_random_init_wide_layer_is_gaussian_within_the_ks_bound() -> None:
    table = _meanfield(_wide())
    stats = _scalars(table)
    assert stats["preact_ks_bound"] == pytest.approx(1.63 / math.sqrt(D_MLP))
    assert stats["preact_ks"] < stats["preact_ks_bound"]
    assert abs(stats["preact_skew"]) < 0.05 and abs(stats["preact_kurtosis"]) < 0.1
    assert stats["preact_active_fraction"] == pytest.approx(0.5, abs=0.02)
    # The histogram is a density: it integrates to the mass inside mean ± 5 std (all of it, nearly),
    # and follows the Gaussian of the same mean and variance.
    hist = table[table["quantity"] == "preact_hist"].sort_values("index")
    assert len(hist) == HIST_BINS and (hist["layer"] == 0).all()
    centres, density = hist["x"].to_numpy(), hist["value"].to_numpy()
    width = centres[1] - centres[0]
    assert density.sum() * width == pytest.approx(1.0, abs=1e-4)
    mean, std = stats["preact_mean"], stats["preact_std"]
    gauss = torch.distributions.Normal(mean, std).log_prob(torch.tensor(centres)).exp().numpy()
    assert abs(density - gauss).max() < 0.05 * gauss.max()


def test_a_sparsified_layer_is_not_gaussian() -> None:
    model = _wide()
    with torch.no_grad():
        w_in = model.blocks[0].mlp.W_in  # [d_model, d_mlp]
        # One input weight per neuron: each pre-activation is one product w · x̂_i, not a sum.
        keep = torch.randint(0, 64, (D_MLP,), generator=torch.Generator().manual_seed(1))
        mask = torch.zeros_like(w_in)
        mask[keep, torch.arange(D_MLP)] = 1.0
        w_in.mul_(mask)
    stats = _scalars(_meanfield(model))
    assert stats["preact_ks"] > 2 * stats["preact_ks_bound"]
    assert stats["preact_kurtosis"] > 2.0


def test_ks_distance_and_moments_on_analytic_samples() -> None:
    normal = torch.distributions.Normal(0.0, 1.0)
    n = 2000
    quantiles = normal.icdf((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    # The sample at the Gaussian's own mid-quantiles: the empirical CDF misses Φ by half a step.
    assert ks_gaussian(quantiles, 0.0, 1.0) == pytest.approx(0.5 / n, rel=1e-9)
    # Half at −1, half at +1 (mean 0, std 1): the largest gap is 1/2 − Φ(−1) at either step.
    two = torch.tensor([-1.0, 1.0]).repeat(500)
    assert ks_gaussian(two, 0.0, 1.0) == pytest.approx(0.5 - 0.5 * math.erfc(1 / math.sqrt(2)), rel=1e-12)
    stats = preact_stats(two.reshape(1, 10, 100))
    assert stats["kurtosis"] == pytest.approx(-2.0) and stats["skew"] == pytest.approx(0.0, abs=1e-12)
    assert stats["active_fraction"] == 0.5 and stats["ks_bound"] == pytest.approx(1.63 / 10)
    # A uniform grid on [−√3, √3]: mean 0, std 1, excess kurtosis −6/5.
    grid = torch.linspace(-math.sqrt(3), math.sqrt(3), 100_001, dtype=torch.float64)
    stats = preact_stats(grid.reshape(1, 1, -1))
    assert stats["std"] == pytest.approx(1.0, rel=1e-4) and stats["kurtosis"] == pytest.approx(-1.2, abs=1e-3)


def test_a_model_without_mlps_gives_an_empty_table() -> None:
    assert _meanfield(_wide(attn_only=True)).empty


def test_the_field_measures_on_a_local_hugging_face_model(isolated_data_dir: Path) -> None:
    from phasescope.models.loading import load_model

    path = isolated_data_dir / "models" / "gpt2"
    save_hf_model(hf_gpt2, path)
    loaded = load_model(str(path), 0)
    table = measure_checkpoint(
        loaded, ["residual", "correlation", "meanfield"], InputSpec(n_prompts=4, seq_len=16)
    )
    assert set(table["measure"]) == {"residual", "correlation", "meanfield"}
    for quantity in ("resid_growth", "mlp_share", "preact_ks", "residual_correlation_length"):
        assert sorted(table.loc[table["quantity"] == quantity, "layer"]) == [0, 1], quantity
    growth = table[table["quantity"] == "resid_growth"]["value"]
    assert growth.notna().all() and (growth > 0).all()
    mass = table[table["quantity"] == "attention_mass_distance"]
    assert mass.groupby(["layer", "head"])["value"].sum().to_numpy() == pytest.approx(1.0, abs=1e-9)
    ks = table[table["quantity"] == "preact_ks"]["value"]
    assert ks.between(0, 1).all()
