"""Grouped-query attention in the spectra: QK/OV per query head with its group's shared W_K/W_V,
and W_K/W_V ESDs that count each key/value head once."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from phasescope.analysis.run import model_weights
from phasescope.measures.powerlaw import weight_esd
from phasescope.measures.spectra import spectra_table, weight_matrices

N_HEADS, N_KV, D_MODEL, D_HEAD = 4, 2, 16, 4


@pytest.fixture(scope="module")
def gqa_model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        d_head=D_HEAD,
        n_key_value_heads=N_KV,
        d_vocab=20,
        n_ctx=8,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="rotary",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3.9's own deprecations
        return HookedTransformer(cfg)


def _values(table, quantity: str, **where) -> torch.Tensor:
    rows = table[table.quantity == quantity]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return torch.tensor(rows.sort_values("index")["value"].to_numpy(), dtype=torch.float64)


def test_qk_and_ov_spectra_per_query_head_use_the_groups_shared_key_and_value(gqa_model) -> None:
    table = spectra_table(None, model_weights(gqa_model), 0, n_key_value_heads=N_KV)
    for layer, block in enumerate(gqa_model.blocks):
        attn = block.attn
        assert attn._W_K.shape == (N_KV, D_MODEL, D_HEAD)  # the model's own, unexpanded
        for head in range(N_HEADS):
            group = head // (N_HEADS // N_KV)  # the key/value head this query head reads
            qk = (attn.W_Q[head] @ attn._W_K[group].T).double()  # (d_model, d_model), materialised
            ov = (attn._W_V[group] @ attn.W_O[head]).double()
            for quantity, matrix in (("qk_sigma", qk), ("ov_sigma", ov)):
                expected = torch.linalg.svdvals(matrix)[:D_HEAD]  # rank d_head
                got = _values(table, quantity, layer=layer, head=head)
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # Query heads of one group share W_K, yet their QK spectra differ (their W_Q do).
    assert not torch.allclose(
        _values(table, "qk_sigma", layer=0, head=0), _values(table, "qk_sigma", layer=0, head=1)
    )


def test_key_and_value_esds_count_each_key_value_head_once(gqa_model) -> None:
    weights = model_weights(gqa_model)
    assert weights["W_K"].shape == (2, N_HEADS, D_MODEL, D_HEAD)  # TransformerLens repeats each kv head
    matrices = weight_matrices(weights, n_key_value_heads=N_KV)
    for name, own in (("W_K", "_W_K"), ("W_V", "_W_V")):
        real = torch.stack([getattr(b.attn, own) for b in gqa_model.blocks])  # (L, n_kv, d_model, d_head)
        real = real.permute(0, 2, 1, 3).reshape(2, D_MODEL, N_KV * D_HEAD)
        assert torch.equal(matrices[name], real)
        torch.testing.assert_close(weight_esd(matrices[name]), weight_esd(real))
        # Without the grouping the repeated columns would double every eigenvalue's weight.
        naive = weight_matrices(weights)[name]
        assert naive.shape[-1] == N_HEADS * D_HEAD
        assert not torch.allclose(weight_esd(naive)[:, : N_KV * D_HEAD], weight_esd(real))

    table = spectra_table(None, weights, 0, n_key_value_heads=N_KV)
    esd = table[(table.quantity == "esd_eigenvalue") & (table.matrix == "W_K") & (table.layer == 0)]
    assert len(esd) == min(D_MODEL, N_KV * D_HEAD)


def test_heads_that_are_not_repeated_groups_are_refused(gqa_model) -> None:
    weights = model_weights(gqa_model)
    broken = weights["W_K"].clone()
    broken[:, 1] += 1.0  # head 1 no longer equals head 0 of its group
    with pytest.raises(ValueError, match="repeated key/value heads"):
        weight_matrices({"W_K": broken}, n_key_value_heads=N_KV)
