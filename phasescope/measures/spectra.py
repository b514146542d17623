"""Spectra of attention patterns and weight matrices.

A causal attention matrix is lower triangular, so its eigenvalues are its diagonal and say little; its
singular values say how many independent directions the head mixes. Per head the bilinear forms
``W_QK = W_Q W_Kᵀ`` and ``W_OV = W_V W_O`` are analysed by factored SVD (never materialising the
``d_model × d_model`` products), and every weight matrix gets an empirical spectral density with its
Marchenko–Pastur edges and power-law tail (:mod:`phasescope.measures.powerlaw`). Definitions, the
identities the tests check and a reading guide: docs/measures.md, section "Spectra".
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.powerlaw import marchenko_pastur_edges, power_law_fit, weight_esd
from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "attention_singular_values",
    "factored_svdvals",
    "qk_ov_singular_values",
    "spectra_table",
    "weight_matrices",
]

MEASURE = "spectra"
# Head-split weights whose heads concatenate along the rows ([head·d_head, d_model]); the others
# ([layer, head, d_model, d_head]) concatenate along the columns.
_HEADS_ON_ROWS = frozenset({"W_O"})


def attention_singular_values(
    patterns: Float[Tensor, "*batch query key"],
) -> dict[str, Tensor]:
    """Singular-value summary of attention matrices, each ``query × key`` matrix on its own.

    Computed in float64. Zero rows or columns (padding) only add zero singular values, so none of the
    summaries below changes when a prompt is padded.

    Args:
        patterns: post-softmax attention patterns (rows sum to 1, zeros at masked keys), with any
            leading axes, e.g. ``[layer, batch, head, query, key]``.

    Returns:
        A dict of float64 tensors:

        - ``sigma`` ``[*batch, k]``: singular values, descending, ``k = min(query, key)``.
        - ``stable_rank`` ``[*batch]``: ``‖A‖_F² / σ₁² = Σσ² / σ₁²``, in ``[1, k]``.
        - ``effective_rank`` ``[*batch]``: ``exp(H(p))`` with ``p = σ / Σσ`` (Roy & Vetterli 2007),
          in ``[1, k]``.
        - ``gap`` ``[*batch]``: ``σ₁ - σ₂`` (``σ₁`` when ``k = 1``).
        - ``sigma_max`` ``[*batch]``: ``σ₁`` (≥ 1 for a row-stochastic square matrix).

        An all-zero matrix gets stable and effective rank 0.
    """
    sigma = torch.linalg.svdvals(patterns.to(torch.float64))  # [*batch, k], descending
    top = sigma[..., 0]
    second = sigma[..., 1] if sigma.shape[-1] > 1 else torch.zeros_like(top)
    nonzero = top > 0
    safe_top = torch.where(nonzero, top, torch.ones_like(top))
    stable_rank = torch.where(nonzero, sigma.square().sum(-1) / safe_top.square(), torch.zeros_like(top))
    total = sigma.sum(-1, keepdim=True)
    p = sigma / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(-1)  # 0·ln 0 = 0
    effective_rank = torch.where(nonzero, torch.exp(entropy), torch.zeros_like(top))
    return {
        "sigma": sigma,
        "stable_rank": stable_rank,
        "effective_rank": effective_rank,
        "gap": top - second,
        "sigma_max": top,
    }


def factored_svdvals(
    left: Float[Tensor, "*batch m r"], right: Float[Tensor, "*batch r n"]
) -> Float[Tensor, "*batch s"]:
    """Singular values of ``left @ right`` without forming the ``m × n`` product.

    With reduced QR ``left = Q₁R₁`` and ``rightᵀ = Q₂R₂`` the product is ``Q₁ (R₁R₂ᵀ) Q₂ᵀ``; ``Q₁`` and
    ``Q₂`` have orthonormal columns, so the singular values are those of the small middle ``R₁R₂ᵀ``
    (the idea of TransformerLens's ``FactoredMatrix``). Cost O((m + n)r²) instead of O(mnr).

    Args:
        left: the left factor, e.g. ``W_Q`` ``[layer, head, d_model, d_head]``.
        right: the right factor, e.g. ``W_Kᵀ`` ``[layer, head, d_head, d_model]``.

    Returns:
        Singular values in float64, descending, ``s = min(m, r, n)`` of them (``r`` in the usual case
        ``r ≤ m, n``).
    """
    if left.shape[-1] != right.shape[-2]:
        raise ValueError(f"inner dimensions differ: left {tuple(left.shape)}, right {tuple(right.shape)}")
    _, r_left = torch.linalg.qr(left.to(torch.float64))  # [*batch, min(m, r), r]
    _, r_right = torch.linalg.qr(right.to(torch.float64).transpose(-1, -2))  # [*batch, min(n, r), r]
    middle = r_left @ r_right.transpose(-1, -2)  # [*batch, min(m, r), min(n, r)]
    return torch.linalg.svdvals(middle)


def qk_ov_singular_values(
    W_Q: Float[Tensor, "layer head d_model d_head"],
    W_K: Float[Tensor, "layer head d_model d_head"],
    W_V: Float[Tensor, "layer head d_model d_head"],
    W_O: Float[Tensor, "layer head d_head d_model"],
) -> tuple[Float[Tensor, "layer head d_head"], Float[Tensor, "layer head d_head"]]:
    """Singular values of each head's ``W_QK = W_Q W_Kᵀ`` and ``W_OV = W_V W_O`` (TransformerLens layout).

    The query-key bilinear form leaves out the Q/K biases, as TransformerLens's ``model.QK`` does.

    Args:
        W_Q: query weights.
        W_K: key weights.
        W_V: value weights.
        W_O: output weights.

    Returns:
        ``(qk, ov)``, float64, descending along the last axis. Unit: that of the weight products
        (``qk`` scales the pre-softmax score before the ``1/√d_head``).
    """
    qk = factored_svdvals(W_Q, W_K.transpose(-1, -2))
    ov = factored_svdvals(W_V, W_O)
    return qk, ov


def weight_matrices(
    weights: Mapping[str, Tensor], n_key_value_heads: int | None = None
) -> dict[str, Float[Tensor, "*layer rows cols"]]:
    """The 2-d matrices whose spectra are reported, one per layer where the weight has a layer axis.

    Biases (``b_*``) and tensors with fewer than 2 axes are skipped. Shapes are read as TransformerLens
    lays them out: 2 axes (``W_E``, ``W_pos``, ``W_U``) are one matrix; 3 axes (``W_in``, ``W_out``) are
    ``[layer, rows, cols]``; 4 axes are head-split ``[layer, head, d_model, d_head]`` whose heads are
    concatenated into one ``[d_model, head·d_head]`` matrix per layer, except ``W_O``
    ``[layer, head, d_head, d_model]`` which becomes ``[head·d_head, d_model]``.

    With grouped-query attention, TransformerLens's ``W_K`` and ``W_V`` repeat each key/value head
    once per query head of its group (``repeat_interleave``); their matrices keep one copy per
    key/value head, ``[d_model, n_key_value_heads·d_head]``, the projection the model really has
    (the copies would add no direction, only scale every singular value by the group size's root).

    Args:
        weights: weight tensors by name.
        n_key_value_heads: key/value heads per layer when fewer than the query heads, else None.

    Returns:
        By name, ``[rows, cols]`` or ``[layer, rows, cols]``.

    Raises:
        ValueError: ``W_K``/``W_V`` heads do not come in identical groups of ``n_heads / n_key_value_heads``.
    """
    out: dict[str, Tensor] = {}
    for name, W in weights.items():
        if name.startswith("b_") or W.ndim < 2:
            continue
        if W.ndim == 4 and name in ("W_K", "W_V") and n_key_value_heads and W.shape[1] != n_key_value_heads:
            W = _key_value_heads(name, W, n_key_value_heads)
        if W.ndim in (2, 3):
            out[name] = W
        elif W.ndim == 4:
            n_layers, n_heads, a, b = W.shape
            if name in _HEADS_ON_ROWS:
                out[name] = W.reshape(n_layers, n_heads * a, b)  # (L, H·d_head, d_model)
            else:
                out[name] = W.permute(0, 2, 1, 3).reshape(n_layers, a, n_heads * b)  # (L, d_model, H·d_head)
        else:
            raise ValueError(f"{name}: cannot read a weight with {W.ndim} axes {tuple(W.shape)}")
    return out


def _key_value_heads(name: str, W: Tensor, n_kv: int) -> Tensor:
    """One copy of each key/value head from TransformerLens's per-query-head ``W_K``/``W_V``."""
    n_heads = W.shape[1]
    if n_heads % n_kv:
        raise ValueError(f"{name}: {n_heads} heads do not split into {n_kv} key/value groups")
    group = n_heads // n_kv
    unique = W[:, ::group]  # (L, n_kv, d_model, d_head): the first query head of each group
    if not torch.equal(unique.repeat_interleave(group, dim=1), W):
        raise ValueError(f"{name}: heads are not {n_kv} repeated key/value heads")
    return unique


def spectra_table(
    patterns: Float[Tensor, "layer batch head query key"] | None,
    weights: Mapping[str, Tensor],
    checkpoint: int,
    min_tail: int = 10,
    n_key_value_heads: int | None = None,
) -> pd.DataFrame:
    """All spectra of one checkpoint as a tidy table (``measure = "spectra"``).

    Args:
        patterns: attention patterns (post-softmax); ``None`` to report weight spectra only.
        weights: weights by TransformerLens name (``W_Q`` ... ``W_U``), see :func:`weight_matrices`.
        checkpoint: training step of the checkpoint.
        min_tail: the fewest tail points of a power-law fit (:func:`power_law_fit`).
        n_key_value_heads: grouped-query attention's key/value heads per layer (None: one per query
            head). ``qk_sigma``/``ov_sigma`` stay per query head, each with its group's shared
            ``W_K``/``W_V``; the ``W_K``/``W_V`` ESDs count each key/value head once.

    Returns:
        A tidy table (:mod:`phasescope.measures.tables`) with quantities

        - per (layer, head), averaged over the batch: ``sigma`` (by ``index``, σ_k averaged over
          prompts), ``stable_rank``, ``effective_rank``, ``gap``, ``sigma_max``;
        - per (layer, head) when ``W_Q``, ``W_K``, ``W_V``, ``W_O`` are all given: ``qk_sigma``,
          ``ov_sigma`` (by ``index``);
        - per weight matrix (``matrix`` column; per layer, or layer <NA> for ``W_E``, ``W_pos``,
          ``W_U``): ``esd_eigenvalue`` (by ``index``, descending), ``mp_lambda_minus``,
          ``mp_lambda_plus``, ``spike_count``, and ``esd_alpha``, ``esd_alpha_se``, ``esd_xmin``,
          ``esd_n_tail`` where the fit is possible (at least ``min_tail`` positive eigenvalues).
    """
    tables: list[pd.DataFrame] = []
    if patterns is not None:
        if patterns.ndim != 5:
            raise ValueError(
                f"patterns must be [layer, batch, head, query, key], got {tuple(patterns.shape)}"
            )
        stats = attention_singular_values(patterns)
        for quantity, values in stats.items():
            mean = values.mean(dim=1)  # average over the batch axis: (L, H) or (L, H, k)
            dims = ("layer", "head", "index") if quantity == "sigma" else ("layer", "head")
            tables.append(tidy(MEASURE, quantity, mean, dims, checkpoint=checkpoint))

    if all(name in weights for name in ("W_Q", "W_K", "W_V", "W_O")):
        qk, ov = qk_ov_singular_values(weights["W_Q"], weights["W_K"], weights["W_V"], weights["W_O"])
        for quantity, values in (("qk_sigma", qk), ("ov_sigma", ov)):
            tables.append(tidy(MEASURE, quantity, values, ("layer", "head", "index"), checkpoint=checkpoint))

    matrices = weight_matrices(weights, n_key_value_heads)
    esds: dict[str, Tensor] = {}
    for name, W in matrices.items():
        # Tied embeddings (GPT-2, most small models): W_U is W_Eᵀ, whose ESD is the same. On GPT-2 small
        # that SVD is an eighth of the weight spectra's time, so it is taken once.
        tied = name == "W_U" and "W_E" in esds and _is_transpose(W, matrices["W_E"])
        esds[name] = esds["W_E"] if tied else weight_esd(W if W.ndim == 3 else W.unsqueeze(0))
        tables.extend(_weight_tables(name, W, esds[name], checkpoint, min_tail))
    return concat_tables(tables)


def _is_transpose(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape[::-1] and bool(torch.equal(a, b.transpose(-1, -2)))


def _weight_tables(name: str, W: Tensor, eigs: Tensor, checkpoint: int, min_tail: int) -> list[pd.DataFrame]:
    """MP edges, spikes and power-law fit of one matrix (``[rows, cols]``) or one per layer, from its ESD.

    ``eigs`` is ``weight_esd`` of ``W`` (``[layer, M]``; one layer for a single matrix), descending.
    """
    per_layer = W.ndim == 3
    stack = W if per_layer else W.unsqueeze(0)  # (L, rows, cols)
    # Element variance of each layer's matrix sets the MP scale.
    variance = stack.to(torch.float64).flatten(1).var(dim=1, correction=0)
    rows, cols = stack.shape[-2:]
    tables: list[pd.DataFrame] = []
    for layer in range(stack.shape[0]):
        fixed: dict[str, object] = {"matrix": name}
        if per_layer:
            fixed["layer"] = layer
        lo, hi = marchenko_pastur_edges(rows, cols, float(variance[layer]))
        scalars: dict[str, float] = {
            "mp_lambda_minus": lo,
            "mp_lambda_plus": hi,
            "spike_count": float((eigs[layer] > hi).sum()),
        }
        fit = power_law_fit(eigs[layer], min_tail=min_tail)
        if fit["n_tail"] > 0:
            scalars.update(
                esd_alpha=fit["alpha"],
                esd_alpha_se=fit["alpha_se"],
                esd_xmin=fit["xmin"],
                esd_n_tail=float(fit["n_tail"]),
            )
        tables.append(
            tidy(MEASURE, "esd_eigenvalue", eigs[layer], ("index",), checkpoint=checkpoint, fixed=fixed)
        )
        for quantity, value in scalars.items():
            tables.append(tidy(MEASURE, quantity, value, checkpoint=checkpoint, fixed=fixed))
    return tables
