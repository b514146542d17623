"""Benchmark 1: entropy + thermo + spectra on one checkpoint, phasescope vs the notebook recipe vs a forward pass.

Three ways to get the same numbers for one batch of prompts:

* **bare forward** — ``model(tokens)``: the floor; nothing is measured.
* **phasescope** — the worker path of ``phasescope.analysis.run.measure_checkpoint`` for the measures
  ``entropy``, ``thermo`` and ``spectra``: ``capture_attention`` (one forward pass, hooks keep only the
  pre-softmax scores), then ``entropy_table``, ``thermo_table`` (default β grid) and ``spectra_table``
  (attention singular values, plus the weight spectra, timed apart because they do not depend on the
  prompts; benchmark 2 compares them with WeightWatcher). The thermo sweep runs on the default grid
  (equal steps between log-spaced knots, where multiplications replace most exponentials); a row
  apart times it on a log-spaced grid of as many points, where it takes one ``exp`` per β (what a
  user-chosen grid without equal steps costs; not counted in the totals).
* **recipe** — what a researcher writes today: ``model.run_with_cache(tokens)`` of everything, then
  numpy loops over layers, heads and prompts: entropy and k90 per row, a β sweep per head with a loop
  over β, ``np.linalg.svd`` per attention matrix. Its numpy part is timed on a subset of layers and
  scaled linearly to all of them (each layer is the same work); the row's note says which.

Models are built from ``HookedTransformerConfig`` with random weights: the cost is the architecture.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from benchmarks.common import GPT2_SMALL, Row, time_it, toy_config

__all__ = ["CASES", "run"]

BENCHMARK = "activations"
_LOG_GRID = "thermo_table on a log-spaced grid (one exp per β; not in the totals)"


def _gpt2_config(**overrides: Any) -> Any:
    from transformer_lens import HookedTransformerConfig

    kwargs: dict[str, Any] = dict(GPT2_SMALL, seed=0)
    kwargs.update(overrides)
    return HookedTransformerConfig(**kwargs)


def _pythia_config(**overrides: Any) -> Any:
    # GPT-NeoX layout of Pythia-160M: rotary on a quarter of each head, attention and MLP in parallel.
    from transformer_lens import HookedTransformerConfig

    kwargs: dict[str, Any] = dict(
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_head=64,
        d_mlp=3072,
        d_vocab=50304,
        n_ctx=2048,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=16,
        parallel_attn_mlp=True,
        seed=0,
    )
    kwargs.update(overrides)
    return HookedTransformerConfig(**kwargs)


# size -> list of (case name, config factory, batch, seq, layers the recipe's numpy part runs on)
CASES: dict[str, list[tuple[str, Any, int, int, int]]] = {
    "toy": [
        ("zoo 2L attn-only d64", lambda: toy_config(), 2, 32, 2),
        (
            "gpt2-like toy",
            lambda: _gpt2_config(
                n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=100, n_ctx=16
            ),
            2,
            16,
            1,
        ),
        (
            "pythia-like toy",
            lambda: _pythia_config(
                n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=100, n_ctx=16, rotary_dim=8
            ),
            2,
            16,
            1,
        ),
    ],
    "quick": [
        ("zoo 2L attn-only d64 (64×32 tokens)", lambda: toy_config(), 64, 32, 2),
        ("GPT-2-small-sized, 2 of 12 layers (4×64 tokens)", lambda: _gpt2_config(n_layers=2), 4, 64, 1),
    ],
    "full": [
        ("zoo 2L attn-only d64 (64×32 tokens)", lambda: toy_config(), 64, 32, 2),
        ("GPT-2-small-sized (8×128 tokens)", lambda: _gpt2_config(), 8, 128, 1),
        ("Pythia-160M-sized (8×128 tokens)", lambda: _pythia_config(), 8, 128, 1),
    ],
}


def _recipe_numpy(cache: Any, layers: list[int], betas: np.ndarray) -> dict[str, np.ndarray]:
    """The notebook recipe's analysis of ``layers``: plain numpy loops over heads, prompts and β."""
    out: dict[str, list[float]] = {"entropy": [], "beta_star": [], "stable_rank": []}
    for layer in layers:
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"].double().cpu().numpy()  # (B, H, Q, K)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double().cpu().numpy()
        n_batch, n_heads, n_q, n_k = scores.shape
        mask = np.tril(np.ones((n_q, n_k), dtype=bool))
        for head in range(n_heads):
            heat = np.zeros(len(betas))
            ent, ranks = [], []
            for b in range(n_batch):
                p, s = pattern[b, head], scores[b, head]
                logp = np.log(np.where(mask & (p > 0), p, 1.0))
                ent.append(-(p * logp).sum(-1)[1:].mean())
                srt = -np.sort(-p, axis=-1)
                _k90 = (np.cumsum(srt, axis=-1) < 0.9).sum(-1) + 1
                energy = np.where(mask, -s, 0.0)
                for i, beta in enumerate(betas):
                    x = np.where(mask, beta * s, -np.inf)
                    top = x.max(-1, keepdims=True)
                    w = np.exp(x - top)
                    z = w.sum(-1, keepdims=True)
                    q = w / z
                    _log_z = np.log(z[:, 0]) + top[:, 0]
                    u = (q * energy).sum(-1)
                    _s = -(q * np.log(np.where(q > 0, q, 1.0))).sum(-1)
                    heat[i] += (beta**2 * (q * (energy - u[:, None]) ** 2).sum(-1))[1:].mean()
                sigma = np.linalg.svd(p, compute_uv=False)
                ranks.append((sigma**2).sum() / sigma[0] ** 2)
            out["entropy"].append(float(np.mean(ent)))
            out["beta_star"].append(float(betas[int(np.argmax(heat))]))
            out["stable_rank"].append(float(np.mean(ranks)))
    return {k: np.asarray(v) for k, v in out.items()}


def _phasescope_parts(
    model: Any, tokens: torch.Tensor, betas: torch.Tensor, repeats: int, device: str
) -> dict:
    """Each step of measure_checkpoint for entropy + thermo + spectra, timed on its own."""
    from phasescope.analysis.run import capture_attention, model_weights
    from phasescope.measures.entropy import entropy_table
    from phasescope.measures.spectra import spectra_table
    from phasescope.measures.thermo import thermo_table

    capture = time_it(lambda: capture_attention(model, tokens, want_logits=False)[1], repeats, device)
    scores = capture.result
    parts = {"capture_attention (forward + hooks)": capture}
    parts["entropy_table"] = time_it(lambda: entropy_table(scores, 0), repeats, device)
    parts["thermo_table"] = time_it(lambda: thermo_table(scores, 0, betas), repeats, device)
    log_grid = torch.logspace(math.log10(betas[0]), math.log10(betas[-1]), len(betas), dtype=torch.float64)
    parts[_LOG_GRID] = time_it(lambda: thermo_table(scores, 0, log_grid), repeats, device)
    parts["spectra_table (attention)"] = time_it(
        lambda: spectra_table(torch.softmax(scores.double(), dim=-1), {}, 0), repeats, device
    )
    weights = model_weights(model)
    # The weight spectra do not depend on the prompts (and are slow on big vocabularies): timed once.
    parts["spectra_table (weights)"] = time_it(lambda: spectra_table(None, weights, 0), 1, device)
    return parts


def run(size: str = "full", device: str = "cpu", n_beta: int = 61) -> list[Row]:
    """Time the three paths on every model of ``size`` ("toy", "quick", "full")."""
    from transformer_lens import HookedTransformer

    from phasescope.measures.thermo import beta_grid

    repeats = {"toy": 1, "quick": 1, "full": 3}[size]
    betas = beta_grid(0.05, 20.0, n_beta)
    rows: list[Row] = []
    for case, make_config, n_batch, seq, recipe_layers in CASES[size]:
        rows += _run_case(
            HookedTransformer, case, make_config, n_batch, seq, recipe_layers, betas, repeats, device
        )
    return rows


def _run_case(
    HookedTransformer: Any,
    case: str,
    make_config: Any,
    n_batch: int,
    seq: int,
    recipe_layers: int,
    betas: torch.Tensor,
    repeats: int,
    device: str,
) -> list[Row]:
    rows: list[Row] = []
    torch.manual_seed(0)
    model = HookedTransformer(make_config()).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (n_batch, seq), generator=gen).to(device)

    def row(variant: str, t: Any, **kw: Any) -> Row:
        return Row(BENCHMARK, case, variant, t.seconds, t.cpu_seconds, t.repeats, **kw)

    with torch.inference_mode():
        bare = time_it(lambda: model(tokens), repeats, device, warmup=1)
    rows.append(row("bare forward `model(tokens)`", bare, ratio=1.0, reference="bare forward", cpu_ratio=1.0))

    parts = _phasescope_parts(model, tokens, betas, repeats, device)
    for name, t in parts.items():
        rows.append(
            row(
                f"phasescope: {name}",
                t,
                ratio=t.seconds / bare.seconds,
                reference="bare forward",
                cpu_ratio=t.cpu_seconds / bare.cpu_seconds,
            )
        )
    act = [t for name, t in parts.items() if "weights" not in name and name != _LOG_GRID]
    act_s, act_cpu = sum(t.seconds for t in act), sum(t.cpu_seconds for t in act)
    all_s = act_s + parts["spectra_table (weights)"].seconds
    all_cpu = act_cpu + parts["spectra_table (weights)"].cpu_seconds
    rows.append(
        Row(
            BENCHMARK,
            case,
            "**phasescope, activation measures**",
            act_s,
            act_cpu,
            repeats,
            act_s / bare.seconds,
            "bare forward",
            act_cpu / bare.cpu_seconds,
            "capture + entropy + thermo + attention spectra",
        )
    )
    rows.append(
        Row(
            BENCHMARK,
            case,
            "phasescope, incl. weight spectra",
            all_s,
            all_cpu,
            repeats,
            all_s / bare.seconds,
            "bare forward",
            all_cpu / bare.cpu_seconds,
            "all that measure_checkpoint runs for these measures",
        )
    )

    layers = list(range(min(recipe_layers, model.cfg.n_layers)))
    with torch.inference_mode():
        cached = time_it(lambda: model.run_with_cache(tokens)[1], 1, device)
    cache = cached.result
    numpy_part = time_it(lambda: _recipe_numpy(cache, layers, betas.numpy()), 1, device)
    scale = model.cfg.n_layers / len(layers)
    rec_s = cached.seconds + numpy_part.seconds * scale
    rec_cpu = cached.cpu_seconds + numpy_part.cpu_seconds * scale
    note = f"run_with_cache + numpy loops ({len(betas)} β)"
    if scale != 1:
        note += f"; numpy part timed on {len(layers)} of {model.cfg.n_layers} layers, scaled ×{scale:g}"
    rows.append(
        Row(
            BENCHMARK,
            case,
            "**recipe** (notebook)",
            rec_s,
            rec_cpu,
            1,
            rec_s / act_s,
            "phasescope, activation measures",
            rec_cpu / act_cpu,
            note,
        )
    )
    return rows
