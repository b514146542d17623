"""Correlation functions (docs/measures.md, "Correlation functions"): attention mass against distance on
real HookedTransformers whose heads are built to be a previous-token head and a uniform causal head,
an exponential head's correlation length, an AR(1) residual stream's C(r) and decay length, and a run
on the trained induction series."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from phasescope.analysis.inputs import Batch
from phasescope.analysis.run import measure_checkpoint
from phasescope.measures.correlation import attention_distance, decay_length, residual_correlation
from phasescope.models.loading import LoadedModel, ModelRef
from phasescope.schemas import InputSpec

N_CTX = 16


def _built_heads() -> HookedTransformer:
    """One layer, two heads: head 0 attends from q to q − 1, head 1 uniformly to keys 0..q.

    Positions are one-hot (W_pos = I, W_E = 0). Head 0's query reads position q into dimension q and
    its key writes position k into dimension k + 1, so its score is 200/√d_head = 50 at k = q − 1 and
    0 elsewhere (the rest of the row gets e^−50 of the mass); head 1's query is zero, so all its
    scores are 0.
    """
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=N_CTX,
        n_heads=2,
        d_head=N_CTX,
        n_ctx=N_CTX,
        d_vocab=8,
        attn_only=True,
        normalization_type=None,
        dtype=torch.float64,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_pos.copy_(torch.eye(N_CTX))
        block = model.blocks[0].attn
        block.W_Q[0] = 200.0 * torch.eye(N_CTX)
        block.W_K[0] = torch.diag(torch.ones(N_CTX - 1), 1)  # position k → dimension k + 1
        block.W_K[1] = torch.eye(N_CTX)
    return model


def _measure(model: HookedTransformer, measures: list[str], n: int = 3) -> object:
    tokens = torch.randint(0, 8, (n, N_CTX), generator=torch.Generator().manual_seed(0))
    loaded = LoadedModel(ModelRef("built", "series", "built"), 0, model)
    batch = Batch(tokens, torch.ones_like(tokens, dtype=torch.bool))
    return measure_checkpoint(loaded, measures, InputSpec(), batch=batch)


def test_previous_token_and_uniform_heads_of_a_real_model() -> None:
    table = _measure(_built_heads(), ["correlation"])
    rows = table[table["quantity"] == "attention_mass_distance"]
    prev = rows[rows["head"] == 0].set_index("index")["value"]
    uniform = rows[rows["head"] == 1].set_index("index")["value"]
    # Previous-token head: all the mass at r = 1 (query 0, which has no predecessor, is not averaged).
    assert prev[1] == pytest.approx(1.0, abs=1e-12)
    assert prev.drop(1).abs().max() < 1e-12
    mean = table[table["quantity"] == "attention_mean_distance"].set_index("head")["value"]
    assert mean[0] == pytest.approx(1.0, abs=1e-12)
    # Uniform over keys 0..q: ⟨r⟩_q = q/2, averaged over q = 1..n−1: n/4; mass sums to 1.
    assert mean[1] == pytest.approx(N_CTX / 4, abs=1e-12)
    assert uniform.sum() == pytest.approx(1.0, abs=1e-12) and prev.sum() == pytest.approx(1.0, abs=1e-12)
    # mass(r) = (1/(n−1)) Σ_{q ≥ max(r,1)} 1/(q+1), the analytic uniform curve.
    expected = [sum(1 / (q + 1) for q in range(max(r, 1), N_CTX)) / (N_CTX - 1) for r in range(N_CTX)]
    assert uniform.to_numpy() == pytest.approx(expected, abs=1e-12)
    # Everything on one distance: nothing to fit.
    xi = table[table["quantity"] == "attention_correlation_length"].set_index("head")["value"]
    assert math.isnan(xi[0])
    # The residual stream here is the positional one-hots alone, the same in every prompt: once the
    # mean over prompts is taken away nothing is left to correlate.
    corr = table[table["quantity"] == "residual_correlation"]
    assert corr["value"].isna().all()


@pytest.mark.parametrize("xi", [0.5, 1.0, 3.0])
def test_an_exponential_head_gives_back_its_correlation_length(xi: float) -> None:
    n = 64
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    scores = torch.where(k <= q, -(q - k) / xi, -math.inf).double()
    patterns = torch.softmax(scores, -1).expand(1, 2, 1, n, n)  # [layer, batch, head, query, key]
    mass, per_pair = attention_distance(patterns)
    assert mass.sum().item() == pytest.approx(1.0, abs=1e-12)
    # Rows of short queries are normalised over fewer keys, which the fit sees as a few % of bias.
    assert decay_length(per_pair).item() == pytest.approx(xi, rel=0.02)


def test_decay_length_rules() -> None:
    r = torch.arange(10, dtype=torch.float64)
    assert decay_length(torch.exp(-r / 2.5)).item() == pytest.approx(2.5, rel=1e-12)  # exact exponential
    assert math.isnan(decay_length(torch.ones(10)).item())  # flat: slope 0
    assert math.isnan(decay_length(torch.exp(r / 3)).item())  # growing
    two = torch.tensor([0.0, 1.0, 0.5, 0.0, 0.3, 0.2])
    assert math.isnan(decay_length(two).item())  # the run from r = 1 stops at the zero: two points
    assert math.isnan(decay_length(torch.exp(-r / 50)).item())  # ξ longer than the curve


def test_an_ar1_residual_stream_gives_back_its_decay_length() -> None:
    gen = torch.Generator().manual_seed(0)
    prompts, n, d, rho = 32, 48, 512, 0.8
    x = torch.empty(prompts, n, d, dtype=torch.float64)
    x[:, 0] = torch.randn(prompts, d, generator=gen, dtype=torch.float64)
    for t in range(1, n):  # δx_{t+1} = ρ δx_t + √(1−ρ²) ε: C(r) = ρ^r
        noise = torch.randn(prompts, d, generator=gen, dtype=torch.float64)
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * noise
    # A large per-position offset shared by every prompt (a positional embedding): centring removes it.
    x = x + 5.0 * torch.randn(1, n, d, generator=gen, dtype=torch.float64)
    corr = residual_correlation(x[None])[0]
    assert corr[0].item() == pytest.approx(1.0, abs=1e-12)
    assert corr[:6].numpy() == pytest.approx(rho ** torch.arange(6).numpy(), abs=0.01)
    assert decay_length(corr[None]).item() == pytest.approx(-1 / math.log(rho), rel=0.03)
    # Centring needs a mean over prompts to take away.
    one_prompt = residual_correlation(x[None, :1])
    assert torch.isnan(one_prompt).all()  # one prompt is its own mean


def test_the_trained_induction_series(trained_induction_2l: Path, isolated_data_dir: Path) -> None:
    """On zoo:induction-2l the layer-1 induction heads' mass moves to r = period − 1 = 15."""
    from phasescope.analysis.run import run_local

    shutil.copytree(trained_induction_2l, isolated_data_dir / "zoo" / "induction-2l")
    table, _ = run_local("zoo:induction-2l", [0, 1000], ["correlation", "residual", "meanfield"], InputSpec())
    assert "meanfield" not in set(table["measure"])  # attention-only: nothing to measure, no error
    mass = table[(table["quantity"] == "attention_mass_distance") & (table["layer"] == 1)]
    sums = mass.groupby(["checkpoint", "head"])["value"].sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-9)
    last = mass[mass["checkpoint"] == 1000].pivot(index="index", columns="head", values="value")
    # Only the 16 queries of the second copy have an induction target: about half the mass.
    assert (last.idxmax() == 15).all() and (last.loc[15] > 0.3).all()
    mean = table[(table["quantity"] == "attention_mean_distance") & (table["layer"] == 1)]
    before = mean[mean["checkpoint"] == 0]["value"]
    after = mean[mean["checkpoint"] == 1000]["value"]
    # At init every head is close to uniform (⟨r⟩ = 32/4 = 8); the induction heads look ~10 back.
    assert before.to_numpy() == pytest.approx(8.0, abs=0.1) and (after > 9.0).all()
    growth = table[table["quantity"] == "resid_growth"].set_index(["checkpoint", "layer"])["value"]
    assert growth[(1000, 1)] > growth[(0, 1)] > 1.0
