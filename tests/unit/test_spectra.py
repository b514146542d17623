"""Spectra: the identities of docs/measures.md, section "Spectra", on analytic and seeded random inputs."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from transformer_lens import FactoredMatrix

from phasescope.measures import powerlaw, spectra
from phasescope.measures.powerlaw import marchenko_pastur_edges, power_law_fit, weight_esd
from phasescope.measures.spectra import (
    attention_singular_values,
    factored_svdvals,
    qk_ov_singular_values,
    spectra_table,
    weight_matrices,
)
from phasescope.measures.tables import BASE_COLUMNS

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over keys j ≤ i; exact zeros above the diagonal."""
    n = scores.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def uniform_causal(n: int) -> torch.Tensor:
    """Row i uniform over keys 0..i."""
    return torch.ones(n, n, dtype=F64).tril() / torch.arange(1, n + 1, dtype=F64)[:, None]


def previous_token(n: int) -> torch.Tensor:
    """Row 0 attends to key 0, row i to key i - 1."""
    A = torch.zeros(n, n, dtype=F64)
    A[0, 0] = 1.0
    A[torch.arange(1, n), torch.arange(n - 1)] = 1.0
    return A


@pytest.mark.parametrize("module", [spectra, powerlaw])
def test_all_is_sorted_and_complete(module):
    public = {name for name, obj in vars(module).items() if callable(obj) and not name.startswith("_")}
    own = {name for name in public if getattr(vars(module)[name], "__module__", None) == module.__name__}
    assert module.__all__ == sorted(module.__all__)
    assert own <= set(module.__all__)


# --- attention patterns ---------------------------------------------------------------------------


def test_sum_of_squared_singular_values_is_frobenius_norm():
    A = causal_softmax(torch.randn(2, 3, 4, 12, 12, generator=_gen(0), dtype=F64))
    out = attention_singular_values(A)
    assert out["sigma"].shape == (2, 3, 4, 12)
    torch.testing.assert_close(out["sigma"].square().sum(-1), A.square().sum((-2, -1)), rtol=1e-12, atol=0)
    stable = A.square().sum((-2, -1)) / out["sigma_max"].square()
    torch.testing.assert_close(out["stable_rank"], stable, rtol=1e-12, atol=0)
    assert (out["sigma"][..., :-1] >= out["sigma"][..., 1:]).all()


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_uniform_causal_frobenius_norm_is_harmonic_number(n):
    out = attention_singular_values(uniform_causal(n))
    harmonic = sum(1.0 / k for k in range(1, n + 1))
    assert out["sigma"].square().sum().item() == pytest.approx(harmonic, rel=1e-12)
    assert out["stable_rank"].item() == pytest.approx(harmonic / out["sigma_max"].item() ** 2, rel=1e-12)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_previous_token_singular_values(n):
    out = attention_singular_values(previous_token(n))
    expected = torch.tensor([math.sqrt(2.0)] + [1.0] * (n - 2) + [0.0], dtype=F64)
    torch.testing.assert_close(out["sigma"], expected, rtol=0, atol=1e-12)
    assert out["gap"].item() == pytest.approx(math.sqrt(2.0) - (1.0 if n > 2 else 0.0), abs=1e-12)
    assert out["stable_rank"].item() == pytest.approx(n / 2, rel=1e-12)  # ‖A‖_F² = n, σ₁² = 2


def test_sigma_max_at_least_one_for_random_causal_patterns():
    # A row-stochastic A has A·1 = 1, so ‖A‖₂ ≥ ‖A1‖/‖1‖ = 1.
    scores = 3.0 * torch.randn(4, 8, 6, 20, 20, generator=_gen(1), dtype=F64)
    out = attention_singular_values(causal_softmax(scores))
    assert (out["sigma_max"] >= 1.0 - 1e-12).all()


def test_rank_summaries_of_identity_and_rank_one():
    n = 9
    eye = attention_singular_values(torch.eye(n, dtype=F64))
    assert eye["stable_rank"].item() == pytest.approx(n, rel=1e-12)
    assert eye["effective_rank"].item() == pytest.approx(n, rel=1e-12)
    assert eye["gap"].item() == pytest.approx(0.0, abs=1e-12)
    # Every row attends only to key 0: rank one.
    first = torch.zeros(n, n, dtype=F64)
    first[:, 0] = 1.0
    one = attention_singular_values(first)
    assert one["stable_rank"].item() == pytest.approx(1.0, rel=1e-12)
    assert one["effective_rank"].item() == pytest.approx(1.0, abs=1e-6)  # zeros σ ~ 1e-16 add ~1e-15
    assert one["sigma_max"].item() == pytest.approx(math.sqrt(n), rel=1e-12)


def test_padding_leaves_summaries_unchanged():
    A = causal_softmax(torch.randn(10, 10, generator=_gen(2), dtype=F64))
    padded = torch.zeros(14, 14, dtype=F64)
    padded[:10, :10] = A
    a, b = attention_singular_values(A), attention_singular_values(padded)
    for key in ("stable_rank", "effective_rank", "gap", "sigma_max"):
        assert b[key].item() == pytest.approx(a[key].item(), rel=1e-10), key


# --- QK / OV circuits -----------------------------------------------------------------------------


def test_factored_svdvals_match_materialised_product_and_factored_matrix():
    g = _gen(3)
    layers, heads, d_model, d_head = 2, 4, 64, 16
    W_Q, W_K, W_V = (torch.randn(layers, heads, d_model, d_head, generator=g, dtype=F64) for _ in range(3))
    W_O = torch.randn(layers, heads, d_head, d_model, generator=g, dtype=F64)
    qk, ov = qk_ov_singular_values(W_Q, W_K, W_V, W_O)
    assert qk.shape == ov.shape == (layers, heads, d_head)

    qk_full = torch.linalg.svdvals(W_Q @ W_K.transpose(-1, -2))[..., :d_head]
    ov_full = torch.linalg.svdvals(W_V @ W_O)[..., :d_head]
    torch.testing.assert_close(qk, qk_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ov, ov_full, rtol=1e-10, atol=1e-10)

    torch.testing.assert_close(
        qk, FactoredMatrix(W_Q, W_K.transpose(-1, -2)).svd()[1], rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(ov, FactoredMatrix(W_V, W_O).svd()[1], rtol=1e-10, atol=1e-10)


def test_factored_svdvals_with_a_narrow_factor():
    # m < r: the product has rank ≤ m, and min(m, r, n) values come back.
    g = _gen(4)
    left = torch.randn(3, 5, generator=g, dtype=F64)
    right = torch.randn(5, 7, generator=g, dtype=F64)
    torch.testing.assert_close(
        factored_svdvals(left, right), torch.linalg.svdvals(left @ right), rtol=1e-10, atol=1e-12
    )
    with pytest.raises(ValueError):
        factored_svdvals(left, right.T)


# --- weight ESD, Marchenko-Pastur, power law --------------------------------------------------------


def test_weight_esd_is_eigenvalues_of_correlation_matrix_either_orientation():
    W = torch.randn(50, 20, generator=_gen(5), dtype=F64)
    eigs = weight_esd(W)
    expected = torch.linalg.eigvalsh(W.T @ W / 50).flip(0)
    torch.testing.assert_close(eigs, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weight_esd(W.T), eigs, rtol=1e-12, atol=0)


def test_marchenko_pastur_edges_of_gaussian_matrix():
    n, m, std = 2000, 500, 0.3
    W = std * torch.randn(n, m, generator=_gen(6), dtype=F64)
    eigs = weight_esd(W)
    lo, hi = marchenko_pastur_edges(n, m, W.var(correction=0).item())
    assert eigs.max().item() == pytest.approx(hi, rel=0.02)
    assert eigs.min().item() == pytest.approx(lo, rel=0.02)
    assert marchenko_pastur_edges(m, n, 1.0) == marchenko_pastur_edges(n, m, 1.0)


def test_power_law_fit_recovers_pareto_exponent():
    alpha, xmin, n = 3.0, 0.5, 20000
    u = torch.rand(n, generator=_gen(7), dtype=F64)
    x = xmin * u.pow(-1.0 / (alpha - 1.0))  # density ∝ x^-α above xmin
    fit = power_law_fit(x)
    assert fit["alpha"] == pytest.approx(alpha, abs=0.05)
    assert fit["alpha_se"] == pytest.approx((alpha - 1.0) / math.sqrt(fit["n_tail"]), rel=0.05)
    assert fit["n_tail"] >= 10
    assert fit["xmin"] >= xmin
    assert 0.0 < fit["ks_distance"] < 0.05


def test_power_law_fit_exact_scan_and_mle_formula():
    # On a small sample the scan is exhaustive; check the chosen α against the closed form.
    alpha = 2.5
    x = torch.rand(300, generator=_gen(8), dtype=F64).pow(-1.0 / (alpha - 1.0))
    fit = power_law_fit(x, max_candidates=None)
    tail = x[x >= fit["xmin"]]
    assert tail.numel() == fit["n_tail"]
    assert fit["alpha"] == pytest.approx(
        1.0 + tail.numel() / torch.log(tail / fit["xmin"]).sum().item(), rel=1e-12
    )
    assert power_law_fit(x) == fit  # below the candidate cap the default is exhaustive too


def test_alpha_bootstrap_covers_the_true_exponent_of_pareto_samples():
    # 80 seeded draws of 200 Pareto eigenvalues with known α: the 95% percentile interval of the
    # bootstrap over the eigenvalues (λ_min refitted in each resample) covers α in about 95% of them.
    alpha, n, draws = 2.5, 200, 80
    covered, ratios = 0, []
    for seed in range(draws):
        x = torch.rand(n, generator=_gen(100 + seed), dtype=F64).pow(-1.0 / (alpha - 1.0))
        fit, boot = power_law_fit(x), powerlaw.alpha_bootstrap(x)
        assert boot["n_boot"] == powerlaw.ALPHA_BOOT  # 200 eigenvalues are within the cost budget
        assert boot["alpha_ci_lo"] < fit["alpha"] < boot["alpha_ci_hi"]
        covered += boot["alpha_ci_lo"] <= alpha <= boot["alpha_ci_hi"]
        ratios.append(boot["alpha_boot_se"] / fit["alpha_se"])
    # Binomial spread of the coverage over 80 draws: ±0.024; 0.95 measured.
    assert covered / draws >= 0.88, covered / draws
    # The bootstrap SE adds the choice of λ_min to the asymptotic (α − 1)/√n of a fixed tail, so it
    # is larger, by 1.4× at the median (measured), and within a factor 3 of it in every draw.
    ratios_t = torch.tensor(ratios)
    assert 1.0 < ratios_t.median().item() < 2.0
    assert ratios_t.min().item() > 1 / 3 and ratios_t.max().item() < 3.0
    # Seeded: the same eigenvalues give the same interval; too few eigenvalues give none.
    assert powerlaw.alpha_bootstrap(x) == boot
    assert powerlaw.alpha_bootstrap(x[:5])["n_boot"] == 0


def test_alpha_bootstrap_resamples_are_capped_on_long_spectra():
    x = torch.rand(3000, generator=_gen(5), dtype=F64).pow(-1.0 / 1.5)
    boot = powerlaw.alpha_bootstrap(x)
    c = powerlaw.ALPHA_BOOT_CANDIDATES
    assert boot["n_boot"] == max(20, powerlaw.ALPHA_BOOT_BUDGET // (c * 3000)) == 20
    assert boot["alpha_ci_lo"] < 2.5 < boot["alpha_ci_hi"]


def test_power_law_fit_too_few_points_is_nan():
    fit = power_law_fit(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    assert fit["n_tail"] == 0 and math.isnan(fit["alpha"])
    assert power_law_fit(torch.zeros(50, dtype=F64))["n_tail"] == 0


# --- the table --------------------------------------------------------------------------------------


def _weights(layers: int, heads: int, d_model: int, d_head: int, d_mlp: int, vocab: int, ctx: int):
    g = _gen(9)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float32) / math.sqrt(shape[-2])  # noqa: E731
    return {
        "W_Q": r(layers, heads, d_model, d_head),
        "W_K": r(layers, heads, d_model, d_head),
        "W_V": r(layers, heads, d_model, d_head),
        "W_O": r(layers, heads, d_head, d_model),
        "b_Q": torch.zeros(layers, heads, d_head),
        "W_in": r(layers, d_model, d_mlp),
        "W_out": r(layers, d_mlp, d_model),
        "W_E": r(vocab, d_model),
        "W_pos": r(ctx, d_model),
        "W_U": r(d_model, vocab),
        "ln_w": torch.ones(d_model),
    }


def test_weight_matrices_concatenate_heads():
    w = _weights(2, 4, 32, 8, 64, 50, 16)
    mats = weight_matrices(w)
    assert set(mats) == {"W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_E", "W_pos", "W_U"}
    assert mats["W_Q"].shape == (2, 32, 32) and mats["W_O"].shape == (2, 32, 32)
    # Head h occupies columns h·d_head … (h+1)·d_head of W_Q, rows of W_O.
    torch.testing.assert_close(mats["W_Q"][1, :, 16:24], w["W_Q"][1, 2])
    torch.testing.assert_close(mats["W_O"][1, 16:24, :], w["W_O"][1, 2])
    assert mats["W_E"].shape == (50, 32)


def test_spectra_table_shapes_columns_and_names():
    layers, batch, heads, seq = 2, 3, 4, 12
    d_model, d_head, d_mlp, vocab, ctx = 32, 8, 64, 50, 16
    patterns = causal_softmax(torch.randn(layers, batch, heads, seq, seq, generator=_gen(10)))
    weights = _weights(layers, heads, d_model, d_head, d_mlp, vocab, ctx)
    table = spectra_table(patterns, weights, checkpoint=250)

    assert list(table.columns) == BASE_COLUMNS + ["index", "matrix", "se", "ci_lo", "ci_hi"]
    assert (table["measure"] == "spectra").all() and (table["checkpoint"] == 250).all()
    assert not table["value"].isna().any()
    counts = table["quantity"].value_counts()
    assert counts["sigma"] == layers * heads * seq
    for q in ("stable_rank", "effective_rank", "gap", "sigma_max", "stable_rank_chi"):
        assert counts[q] == layers * heads
    assert counts["stable_rank_prompt"] == layers * heads * batch
    # Uncertainties on the order parameter's rows and the fitted α's only.
    spread = table[table["se"].notna()]
    assert set(spread["quantity"]) == {"stable_rank", "stable_rank_chi", "esd_alpha"}
    assert counts["qk_sigma"] == counts["ov_sigma"] == layers * heads * d_head

    weight_rows = table[table["matrix"].notna()]
    assert set(weight_rows["matrix"]) == {"W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_E", "W_pos", "W_U"}
    n_matrices = 6 * layers + 3
    for q in (
        "mp_lambda_minus",
        "mp_lambda_plus",
        "spike_count",
        "esd_alpha",
        "esd_alpha_se",
        "esd_xmin",
        "esd_n_tail",
    ):
        assert counts[q] == n_matrices, q
    eig = weight_rows[weight_rows["quantity"] == "esd_eigenvalue"]
    assert len(eig) == 6 * layers * d_model + min(vocab, d_model) + min(ctx, d_model) + min(d_model, vocab)
    assert eig[eig["matrix"] == "W_E"]["layer"].isna().all()
    assert set(eig[eig["matrix"] == "W_in"]["layer"]) == {0, 1}
    assert table[table["quantity"] == "sigma"]["head"].notna().all()

    # Batch average: the table's σ is the mean of the per-prompt σ.
    sigma = attention_singular_values(patterns)["sigma"].mean(dim=1)
    row = table[
        (table["quantity"] == "sigma") & (table["layer"] == 1) & (table["head"] == 2) & (table["index"] == 0)
    ]
    assert row["value"].item() == pytest.approx(sigma[1, 2, 0].item(), rel=1e-12)


def test_spectra_table_on_a_tiny_hooked_transformer():
    # A real TransformerLens model built from a config: key names and layouts as the models module passes them.
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_vocab=64,
        n_ctx=32,
        attn_only=True,
        normalization_type=None,
        act_fn=None,
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    tokens = torch.randint(0, 64, (3, 32), generator=_gen(11))
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    patterns = torch.stack([cache["pattern", layer] for layer in range(2)])  # (layer, batch, head, q, k)
    weights = {
        name: getattr(model, name).detach() for name in ("W_Q", "W_K", "W_V", "W_O", "W_E", "W_pos", "W_U")
    }
    table = spectra_table(patterns, weights, checkpoint=0)
    assert not table["value"].isna().any()
    qk = table[table["quantity"] == "qk_sigma"].sort_values(["layer", "head", "index"])["value"].to_numpy()
    expected = model.QK.svd()[1].detach().to(F64).reshape(-1).numpy()
    assert qk == pytest.approx(expected, rel=1e-4)  # the model's float32 SVD against our float64 one
    assert (table[table["quantity"] == "sigma_max"]["value"] >= 1.0 - 1e-9).all()
    assert isinstance(table, pd.DataFrame)


def test_spectra_table_weights_only_and_empty():
    table = spectra_table(None, {"W_E": torch.randn(40, 16, generator=_gen(12))}, checkpoint=5)
    assert set(table["quantity"]) >= {"esd_eigenvalue", "mp_lambda_plus", "esd_alpha"}
    assert len(spectra_table(None, {}, checkpoint=5)) == 0


def test_tied_unembedding_reuses_the_embedding_esd_and_untied_does_not():
    torch.manual_seed(0)
    W_E = torch.randn(300, 24, dtype=torch.float64)
    tied = spectra_table(None, {"W_E": W_E, "W_U": W_E.T.clone()}, 0)
    untied = spectra_table(None, {"W_E": W_E, "W_U": torch.randn(24, 300, dtype=torch.float64)}, 0)

    def esd(table: pd.DataFrame, name: str) -> list[float]:
        rows = table[(table["quantity"] == "esd_eigenvalue") & (table["matrix"] == name)]
        return rows.sort_values("index")["value"].tolist()

    # W_Uᵀ = W_E: the same ESD, computed once, equal to the eigenvalues of WᵀW/N.
    assert esd(tied, "W_U") == esd(tied, "W_E")
    expected = torch.linalg.eigvalsh(W_E.T @ W_E / 300).flip(0)
    assert esd(tied, "W_U") == pytest.approx(expected.tolist(), rel=1e-10)
    assert esd(untied, "W_U") != pytest.approx(esd(untied, "W_E"), rel=1e-3)
    assert esd(untied, "W_E") == esd(tied, "W_E")
