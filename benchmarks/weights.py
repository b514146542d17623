"""Benchmark 2: weight spectra, phasescope's ``spectra_table`` vs ``weightwatcher.WeightWatcher.analyze()``.

One randomly initialised GPT-2-small-shaped model, seen two ways: a Hugging Face ``GPT2LMHeadModel``
(what WeightWatcher reads: its ``Conv1D`` layers) and the same weights converted to a TransformerLens
``HookedTransformer`` (TransformerLens's own ``convert_gpt2_weights``, no LayerNorm folding), on which
phasescope runs ``spectra_table(None, model_weights(model), step)`` as the worker does.

Besides the time, the power-law exponents α are compared on the matrices both tools see whole:
``wpe``/``W_pos``, ``attn.c_proj``/``W_O``, ``mlp.c_fc``/``W_in`` and ``mlp.c_proj``/``W_out``
(WeightWatcher fits the ESD of ``WᵀW``, phasescope that of ``WᵀW/N``: α does not depend on the scale).
WeightWatcher sees the fused ``c_attn`` (Q, K and V in one matrix) where phasescope reports W_Q, W_K
and W_V apart, so those are not compared; it skips the 50257-row embedding (over its ``max_N`` of
50000), which phasescope does (its Gram is about a sixth of phasescope's time here). The weights are
random, so the α values themselves mean nothing (there is no heavy tail to find): this measures
agreement of the fits, not model quality.

WeightWatcher is installed only for this benchmark (``pip install -c constraints.txt weightwatcher``);
without it the benchmark reports phasescope alone and says so.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.common import Row, time_it

__all__ = ["SIZES", "run"]

BENCHMARK = "weights"

# size -> (n_layer, n_embd, n_head, vocab, n_positions)
SIZES = {
    "toy": (1, 64, 4, 500, 128),
    "quick": (2, 768, 12, 50257, 1024),
    "full": (12, 768, 12, 50257, 1024),
}
_WW_MAX_N = 50000  # WeightWatcher's default max_N: larger matrices are not analysed
_WW_TO_TL = {"attn.c_proj": "W_O", "mlp.c_fc": "W_in", "mlp.c_proj": "W_out"}


def _models(size: str, device: str) -> tuple[Any, Any]:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, d, heads, vocab, ctx = SIZES[size]
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=n_layer, n_embd=d, n_head=heads, vocab_size=vocab, n_positions=ctx)
    )
    hf.eval()
    cfg = HookedTransformerConfig(
        n_layers=n_layer,
        d_model=d,
        n_heads=heads,
        d_head=d // heads,
        d_mlp=4 * d,
        d_vocab=vocab,
        n_ctx=ctx,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
    )
    tl = HookedTransformer(cfg)
    tl.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    return hf, tl.to(device).eval()


def _ww_key(longname: str) -> tuple[str, int | None] | None:
    if longname.endswith("wpe"):
        return "W_pos", None
    if longname.endswith("wte"):
        return "W_E", None
    m = re.search(r"\.h\.(\d+)\.(attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$", longname)
    if m:
        return _WW_TO_TL[m.group(2)], int(m.group(1))
    return None


def _alpha_agreement(ours: Any, theirs: Any) -> dict[str, float]:
    """Median and max |Δα| / α over the matrices both tools fit, and how many there are."""
    alphas = ours[ours["quantity"] == "esd_alpha"]
    mine = {(r.matrix, None if pd.isna(r.layer) else int(r.layer)): r.value for r in alphas.itertuples()}
    diffs = []
    for rec in theirs.itertuples():
        key = _ww_key(str(rec.longname))
        if key is None or key not in mine or not np.isfinite(rec.alpha):
            continue
        diffs.append(abs(mine[key] - rec.alpha) / rec.alpha)
    if not diffs:
        return {"n": 0, "median": float("nan"), "max": float("nan")}
    return {"n": len(diffs), "median": float(np.median(diffs)), "max": float(np.max(diffs))}


def _ww_matrices(hf: Any) -> list[Any]:
    """The matrices WeightWatcher analyses in a GPT-2 model: every Conv1D weight, ``wpe``, and ``wte``
    and the (tied) ``lm_head`` unless they have more rows than its ``max_N`` (50000; GPT-2's 50257 has)."""
    from transformers.pytorch_utils import Conv1D

    mats = [m.weight.detach() for m in hf.modules() if isinstance(m, Conv1D)]
    embeddings = [
        hf.transformer.wpe.weight.detach(),
        hf.transformer.wte.weight.detach(),
        hf.lm_head.weight.detach(),
    ]
    return mats + [e for e in embeddings if e.shape[0] <= _WW_MAX_N]


def _same_matrices(mats: list[Any]) -> int:
    """phasescope's per-matrix work (ESD, MP edges, spikes, α) on WeightWatcher's matrices."""
    from phasescope.measures.powerlaw import (
        gram_eigenvalues,
        gram_matrix,
        marchenko_pastur_edges,
        power_law_fit,
    )

    for W in mats:
        gram, total = gram_matrix(W)
        eigs = gram_eigenvalues(gram, max(W.shape))
        count = W.numel()
        variance = float(torch.diagonal(gram).sum()) / count - (float(total) / count) ** 2
        _, hi = marchenko_pastur_edges(*W.shape, variance)
        int((eigs > hi).sum())
        power_law_fit(eigs)
    return len(mats)


def run(size: str = "full", device: str = "cpu") -> list[Row]:
    """Time both tools on the GPT-2-shaped model of ``size`` and compare their α."""
    from phasescope.analysis.run import model_weights
    from phasescope.measures.spectra import spectra_table

    hf, tl = _models(size, device)
    n_layer, d, _, vocab, _ = SIZES[size]
    case = f"GPT-2-small-shaped, {n_layer} layer{'s' if n_layer > 1 else ''}, d_model {d}, vocab {vocab}"
    weights = model_weights(tl)
    ours = time_it(lambda: spectra_table(None, weights, 0), 1, device)
    n_mats = int((ours.result["quantity"] == "mp_lambda_plus").sum())
    rows = [
        Row(
            BENCHMARK,
            case,
            "phasescope `spectra_table(None, model_weights(model), step)`",
            ours.seconds,
            ours.cpu_seconds,
            1,
            1.0,
            "phasescope",
            1.0,
            f"{n_mats} matrices (W_Q/K/V/O, W_in/out per layer; W_E, W_pos, W_U), + factored QK/OV per head; "
            "float64 Gram + LAPACK dsyev per matrix",
        )
    ]
    try:
        import weightwatcher
    except ImportError:
        rows[0].note += "; WeightWatcher not installed (`pip install -c constraints.txt weightwatcher`)"
        return rows

    same = time_it(lambda: _same_matrices([m.to(device) for m in _ww_matrices(hf)]), 1, device)
    rows.append(
        Row(
            BENCHMARK,
            case,
            "phasescope's ESD + MP + α on WeightWatcher's own matrices (like for like)",
            same.seconds,
            same.cpu_seconds,
            1,
            same.seconds / ours.seconds,
            "phasescope",
            same.cpu_seconds / ours.cpu_seconds,
            f"the {same.result} matrices WeightWatcher analyses (fused c_attn, no W_E), one Gram + dsyev "
            "+ fit each (`gram_matrix`, `gram_eigenvalues`, `power_law_fit`); no QK/OV, no table",
        )
    )
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = time_it(lambda: weightwatcher.WeightWatcher(model=hf).analyze(), 1, "cpu")
    details = theirs.result
    agree = _alpha_agreement(ours.result, details)
    rows.append(
        Row(
            BENCHMARK,
            case,
            f"WeightWatcher {weightwatcher.__version__} `analyze()`",
            theirs.seconds,
            theirs.cpu_seconds,
            1,
            theirs.seconds / ours.seconds,
            "phasescope",
            theirs.cpu_seconds / ours.cpu_seconds,
            f"{len(details)} layers analysed (fused c_attn; no W_E), float64 SVDs on the CPU; α on the {agree['n']} "
            f"matrices both fit: median |Δα|/α = {agree['median']:.3g}, max {agree['max']:.3g}; "
            f"like for like (its own matrices) {theirs.seconds / same.seconds:.2f}× phasescope's wall time, "
            f"{theirs.cpu_seconds / same.cpu_seconds:.2f}× its CPU time",
            extra={"alpha_agreement": agree},
        )
    )
    return rows
