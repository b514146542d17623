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

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.fluctuations import PROMPT_ROWS_PER_HEAD, fluctuation_frame, fluctuations
from phasescope.measures.powerlaw import (
    alpha_bootstrap,
    gram_eigenvalues,
    gram_matrix,
    marchenko_pastur_edges,
    power_law_fit,
)
from phasescope.measures.tables import concat_tables, tidy

__all__ = [
    "attention_singular_values",
    "factored_svdvals",
    "product_singular_values",
    "qk_ov_singular_values",
    "spectra_table",
    "weight_matrices",
]

MEASURE = "spectra"
# Head-split weights whose heads concatenate along the rows ([head·d_head, d_model]); the others
# ([layer, head, d_model, d_head]) concatenate along the columns.
_HEADS_ON_ROWS = frozenset({"W_O"})
# Rows of W_E compared with columns of W_U per slab when checking for tied embeddings.
_GRAM_COMPARE_ROWS = 4096


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

    The query-key bilinear form leaves out the Q/K biases, as TransformerLens's ``model.QK`` does. All
    heads of all layers go through one batched Gram route (:func:`product_singular_values`): the
    ``d_head × d_head`` Grams of the four factors, then one small symmetric eigenproblem per head.

    Args:
        W_Q: query weights.
        W_K: key weights.
        W_V: value weights.
        W_O: output weights.

    Returns:
        ``(qk, ov)``, float64, descending along the last axis. Unit: that of the weight products
        (``qk`` scales the pre-softmax score before the ``1/√d_head``).
    """
    q, k, v, o = (w.detach().to(torch.float64) for w in (W_Q, W_K, W_V, W_O))
    qk = product_singular_values(q.mT @ q, k.mT @ k, min(q.shape[-2], k.shape[-2]))
    ov = product_singular_values(v.mT @ v, o @ o.mT, min(v.shape[-2], o.shape[-1]))
    return qk, ov


def product_singular_values(
    gram_left: Float[Tensor, "*batch r r"], gram_right: Float[Tensor, "*batch r r"], outer: int | None = None
) -> Float[Tensor, "*batch s"]:
    """Singular values of a product ``A B`` from the Grams of its factors (``A`` ``m × r``, ``B`` ``r × n``).

    ``σ²(AB)`` are the eigenvalues of ``AᵀA · BBᵀ``, the same as those of the symmetric ``Lᵀ(BBᵀ)L``
    for any ``L`` with ``LLᵀ = AᵀA`` (Cholesky; an eigendecomposition where the Gram is singular), so
    only ``r × r`` matrices are factored: O(r³) per head after the O(mr²) Grams, batched over every
    head of every layer. The Gram route resolves ``σ²`` to ``~r·ε·‖A‖²‖B‖²`` in absolute terms
    (docs/measures.md, "QK and OV circuits"); a factor that is exactly zero gives exact zeros.

    Args:
        gram_left: ``AᵀA``, float64.
        gram_right: ``BBᵀ``, float64.
        outer: ``min(m, n)`` when smaller than ``r`` (the product's rank is then at most that), else None.

    Returns:
        ``s = min(r, outer)`` singular values in float64, descending.
    """
    chol, info = torch.linalg.cholesky_ex(gram_left)
    singular = info != 0
    if bool(singular.any()):
        # A rank-deficient factor: its Gram's square root from the eigendecomposition, L = V·√λ.
        lam, vecs = torch.linalg.eigh(gram_left[singular])
        chol[singular] = vecs * lam.clamp_min(0.0).sqrt().unsqueeze(-2)
    middle = chol.mT @ gram_right @ chol  # (*batch, r, r), symmetric PSD
    sigma_sq = torch.linalg.eigvalsh(middle).flip(-1)  # descending
    s = sigma_sq.shape[-1] if outer is None else min(sigma_sq.shape[-1], outer)
    return sigma_sq[..., :s].clamp_min(0.0).sqrt()


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
          prompts), ``stable_rank``, ``effective_rank``, ``gap``, ``sigma_max``; ``stable_rank`` with
          its standard error over prompts and a 95% bootstrap interval (``se``, ``ci_lo``, ``ci_hi``),
          its value per prompt ``stable_rank_prompt`` (by ``index``) and its susceptibility
          ``stable_rank_chi`` with ``N_p`` = the query rows (docs/measures.md, "Uncertainties and
          susceptibility");
        - per (layer, head) when ``W_Q``, ``W_K``, ``W_V``, ``W_O`` are all given: ``qk_sigma``,
          ``ov_sigma`` (by ``index``);
        - per weight matrix (``matrix`` column; per layer, or layer <NA> for ``W_E``, ``W_pos``,
          ``W_U``): ``esd_eigenvalue`` (by ``index``, descending), ``mp_lambda_minus``,
          ``mp_lambda_plus``, ``spike_count``, and ``esd_alpha``, ``esd_alpha_se``, ``esd_xmin``,
          ``esd_n_tail`` where the fit is possible (at least ``min_tail`` positive eigenvalues);
          ``esd_alpha`` carries the bootstrap over its eigenvalues (:func:`alpha_bootstrap`): its
          standard error in ``se`` and 95% percentile interval in ``ci_lo``, ``ci_hi``.
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
            if quantity != "stable_rank":
                tables.append(tidy(MEASURE, quantity, mean, dims, checkpoint=checkpoint))
                continue
            # The order parameter: its spread over prompts (docs/measures.md, "Uncertainties and
            # susceptibility"), N_p = the matrix's query rows.
            per_prompt = values.transpose(1, 2)  # (L, H, prompt)
            fl = fluctuations(per_prompt, float(patterns.shape[-2]))
            tables.append(
                fluctuation_frame(
                    MEASURE,
                    quantity,
                    mean,
                    per_prompt,
                    dims,
                    fl,
                    checkpoint=checkpoint,
                    max_prompts=PROMPT_ROWS_PER_HEAD,
                )
            )

    matrices = weight_matrices(weights, n_key_value_heads)
    spectra = _weight_spectra(matrices)
    if all(name in weights for name in ("W_Q", "W_K", "W_V", "W_O")):
        qk, ov = _qk_ov_from_grams(weights, matrices, spectra, n_key_value_heads)
        for quantity, values in (("qk_sigma", qk), ("ov_sigma", ov)):
            tables.append(tidy(MEASURE, quantity, values, ("layer", "head", "index"), checkpoint=checkpoint))
    for name, W in matrices.items():
        eigs, variance, _ = spectra[name]
        tables.extend(_weight_tables(name, W, eigs, variance, checkpoint, min_tail))
    return concat_tables(tables)


# A spectrum: (eigenvalues [layer, M] descending, element variance [layer], (Gram [layer, M, M], whether
# it is of the transpose) or None when shared with another matrix's).
_Spectrum = tuple[Tensor, Tensor, tuple[Tensor, bool] | None]


def _weight_spectra(matrices: Mapping[str, Tensor]) -> dict[str, _Spectrum]:
    """ESD and element variance of every matrix (per layer) from one float64 Gram matrix each.

    The Gram also gives the variance (its trace is ``Σw²``) and, for the head-split weights, every
    head's ``d_head × d_head`` Gram (its diagonal blocks), which the QK/OV spectra reuse.
    """
    out: dict[str, _Spectrum] = {}
    for name, W in matrices.items():
        # Tied embeddings (GPT-2, most small models): W_U is W_Eᵀ, whose ESD is the same. On GPT-2 small
        # that Gram is a sixth of the weight spectra's time, so it is taken once.
        if name == "W_U" and "W_E" in out and _is_transpose(W, matrices["W_E"]):
            out[name] = (out["W_E"][0], out["W_E"][1], None)
            continue
        stack = W if W.ndim == 3 else W.unsqueeze(0)  # (L, rows, cols)
        rows, cols = stack.shape[-2:]
        # The orientation with the shorter side as the Gram's; a square W_O is taken as W_O W_Oᵀ so that
        # its Gram is over head·d_head, like W_Q's, and its diagonal blocks are the heads' own.
        transpose = rows < cols or (name in _HEADS_ON_ROWS and rows == cols)
        gram, total = gram_matrix(stack, transpose=transpose)
        count = rows * cols
        mean = total / count
        mean_square = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1) / count  # Σw² = trace(XᵀX)
        variance = mean_square - mean.square()
        # E[w²] − E[w]² cancels when the mean dominates; there the two-pass form (never for weights
        # seen so far, whose |mean| ≪ std).
        cancels = mean.square() > 0.5 * mean_square
        if bool(cancels.any()):
            exact = stack[cancels].to(torch.float64).flatten(1).var(dim=1, correction=0)
            variance[cancels] = exact.to(variance.device)
        eigs = gram_eigenvalues(gram, max(rows, cols))
        out[name] = (eigs, variance, (gram, transpose))
    return out


def _head_grams(name: str, W: Tensor, spectrum: _Spectrum) -> Tensor:
    """Each head's ``d_head × d_head`` Gram of a head-split weight ``[layer, head, ·, ·]``, float64.

    ``W_Q``/``W_K``/``W_V`` ``[layer, head, d_model, d_head]`` give ``W[h]ᵀW[h]``, ``W_O``
    ``[layer, head, d_head, d_model]`` gives ``W[h]W[h]ᵀ``: the diagonal blocks of the layer's Gram when
    that Gram is over head·d_head (``d_model ≥ head·d_head``), else a batched product.
    """
    layers, heads = W.shape[:2]
    d_head = W.shape[2] if name in _HEADS_ON_ROWS else W.shape[3]
    stored = spectrum[2]
    over_heads = stored is not None and stored[1] == (name in _HEADS_ON_ROWS)
    if stored is not None and over_heads and stored[0].shape[-1] == heads * d_head:
        blocks = stored[0].reshape(layers, heads, d_head, heads, d_head)
        return torch.diagonal(blocks, dim1=1, dim2=3).permute(0, 3, 1, 2)  # (L, H, d_head, d_head)
    w = W.detach().to(torch.float64)
    return w @ w.mT if name in _HEADS_ON_ROWS else w.mT @ w


def _qk_ov_from_grams(
    weights: Mapping[str, Tensor],
    matrices: Mapping[str, Tensor],
    spectra: Mapping[str, _Spectrum],
    n_key_value_heads: int | None,
) -> tuple[Tensor, Tensor]:
    """:func:`qk_ov_singular_values`, with the heads' Grams taken from the weight ESDs' Grams."""
    W_Q, W_K, W_V, W_O = (weights[n] for n in ("W_Q", "W_K", "W_V", "W_O"))
    if not all(w.ndim == 4 for w in (W_Q, W_K, W_V, W_O)):
        return qk_ov_singular_values(W_Q, W_K, W_V, W_O)
    n_heads = W_Q.shape[1]
    grams: dict[str, Tensor] = {}
    for name, W in (("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V), ("W_O", W_O)):
        kv = name in ("W_K", "W_V") and matrices[name].shape[-1] != W.shape[1] * W.shape[3]
        if kv:
            # Grouped-query attention: the matrix holds one copy per key/value head; each query head
            # reads its group's (TransformerLens's repeat_interleave).
            unique = W[:, :: n_heads // (n_key_value_heads or n_heads)]
            grams[name] = _head_grams(name, unique, spectra[name]).repeat_interleave(
                n_heads // unique.shape[1], dim=1
            )
        else:
            grams[name] = _head_grams(name, W, spectra[name])
    qk = product_singular_values(grams["W_Q"], grams["W_K"], min(W_Q.shape[-2], W_K.shape[-2]))
    ov = product_singular_values(grams["W_V"], grams["W_O"], min(W_V.shape[-2], W_O.shape[-1]))
    return qk, ov


def _is_transpose(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` equals ``bᵀ`` exactly; compared in slabs, so an untied pair is told apart at once."""
    if a.shape != b.shape[::-1]:
        return False
    step = max(1, _GRAM_COMPARE_ROWS)
    for start in range(0, b.shape[0], step):
        if not torch.equal(a[:, start : start + step], b[start : start + step].mT):
            return False
    return True


def _weight_tables(
    name: str, W: Tensor, eigs: Tensor, variance: Tensor, checkpoint: int, min_tail: int
) -> list[pd.DataFrame]:
    """ESD, MP edges, spikes and power-law fit of one matrix (``[rows, cols]``) or one per layer.

    ``eigs`` ``[layer, M]`` (one layer for a single matrix), descending; ``variance`` ``[layer]``. One
    frame for all of them: a tidy frame per quantity and layer cost more than the spectra themselves
    on a small model (pandas builds each in ~10 ms).
    """
    per_layer = W.ndim == 3
    rows, cols = W.shape[-2:]
    n_layers, m = eigs.shape
    edges = np.array([marchenko_pastur_edges(rows, cols, float(v)) for v in variance.cpu()]).reshape(-1, 2)
    values = eigs.cpu().numpy()
    layer_ids = np.arange(n_layers, dtype=np.float64)
    quantities = [np.full(n_layers * m, "esd_eigenvalue", dtype=object)]
    layers = [np.repeat(layer_ids, m)]
    index = [np.tile(np.arange(m, dtype=np.float64), n_layers)]
    out = [values.ravel()]
    # quantity -> (layers it is reported for, values): every layer, or those whose fit succeeded
    scalars = {
        "mp_lambda_minus": (layer_ids, edges[:, 0]),
        "mp_lambda_plus": (layer_ids, edges[:, 1]),
        "spike_count": (layer_ids, (values > edges[:, 1:]).sum(-1).astype(np.float64)),
    }
    fits = [power_law_fit(e, min_tail=min_tail) for e in eigs.cpu()]
    fitted = np.array([layer for layer, fit in enumerate(fits) if fit["n_tail"] > 0], dtype=np.int64)
    # α's bootstrap over the eigenvalues (se, ci_lo, ci_hi of the esd_alpha rows), beside esd_alpha_se.
    boots = [alpha_bootstrap(eigs[layer].cpu(), min_tail=min_tail) for layer in fitted]
    for quantity, key in (
        ("esd_alpha", "alpha"),
        ("esd_alpha_se", "alpha_se"),
        ("esd_xmin", "xmin"),
        ("esd_n_tail", "n_tail"),
    ):
        scalars[quantity] = (fitted, np.array([float(fits[layer][key]) for layer in fitted]))
    for quantity, (at, vals) in scalars.items():
        quantities.append(np.full(len(vals), quantity, dtype=object))
        layers.append(np.asarray(at, dtype=np.float64))
        index.append(np.full(len(vals), np.nan))
        out.append(vals)
    quantity = np.concatenate(quantities)
    spread = {col: np.full(len(quantity), np.nan) for col in ("se", "ci_lo", "ci_hi")}
    is_alpha = quantity == "esd_alpha"  # in the order of `fitted`
    for col, key in (("se", "alpha_boot_se"), ("ci_lo", "alpha_ci_lo"), ("ci_hi", "alpha_ci_hi")):
        spread[col][is_alpha] = [b[key] for b in boots]
    frame = pd.DataFrame(
        {
            "measure": MEASURE,
            "checkpoint": int(checkpoint),
            "layer": np.concatenate(layers) if per_layer else np.nan,
            "head": np.nan,
            "quantity": quantity,
            "value": np.concatenate(out),
            "index": np.concatenate(index),
            "matrix": name,
            **spread,
        }
    )
    return [frame]
