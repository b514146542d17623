"""Benchmark 5: an 11×11 loss-surface slice, batched (``torch.func.vmap`` over grid points) vs a plain loop.

``phasescope.measures.landscape.loss_slice(model, batch, n_points=11, batched=...)``: the same
filter-normalised plane (same seed), evaluated either as vectorised calls over stacked parameters or
as one forward pass per grid point. The ratio is loop / batched (> 1: batching pays). The largest
difference between the two surfaces is reported too (they must agree).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.common import Row, time_it, toy_config

__all__ = ["CASES", "run"]

BENCHMARK = "landscape"

# size -> list of (case, config overrides, prompts, half length of the repeated block, grid points)
CASES: dict[str, list[tuple[str, dict[str, Any], int, int, int]]] = {
    "toy": [("zoo 2L attn-only d64, 3×3 grid", {}, 4, 8, 3)],
    "quick": [("zoo 2L attn-only d64 (64×32 tokens)", {}, 64, 16, 11)],
    "full": [
        ("zoo 2L attn-only d64 (64×32 tokens)", {}, 64, 16, 11),
        (
            "4L d256 with MLPs, vocab 1000 (16×64 tokens)",
            dict(
                n_layers=4,
                d_model=256,
                n_heads=8,
                d_head=32,
                d_mlp=1024,
                d_vocab=1000,
                n_ctx=64,
                attn_only=False,
                normalization_type="LN",
                act_fn="gelu",
            ),
            16,
            32,
            11,
        ),
    ],
}


def run(size: str = "full", device: str = "cpu") -> list[Row]:
    """Time ``loss_slice`` batched and looped on each model of ``size``."""
    from transformer_lens import HookedTransformer

    from phasescope.analysis.inputs import repeated_random_tokens
    from phasescope.measures.landscape import loss_slice

    rows: list[Row] = []
    for case, overrides, n_prompts, half, n_points in CASES[size]:
        torch.manual_seed(0)
        model = HookedTransformer(toy_config(**overrides)).to(device).eval()
        batch = repeated_random_tokens(n_prompts, half, model.cfg.d_vocab, seed=0).to(device)

        def timed(batched: bool, model: Any = model, batch: Any = batch, n_points: int = n_points) -> Any:
            return time_it(lambda: loss_slice(model, batch, n_points=n_points, batched=batched)[1], 1, device)

        looped, batched = timed(False), timed(True)
        diff = float((looped.result - batched.result).abs().max())
        grid = f"{n_points}×{n_points} grid"
        rows.append(
            Row(
                BENCHMARK,
                case,
                f"plain loop, {grid}",
                looped.seconds,
                looped.cpu_seconds,
                1,
                looped.seconds / batched.seconds,
                "batched",
                looped.cpu_seconds / batched.cpu_seconds,
                "one forward pass per grid point",
            )
        )
        rows.append(
            Row(
                BENCHMARK,
                case,
                f"batched (vmap), {grid}",
                batched.seconds,
                batched.cpu_seconds,
                1,
                1.0,
                "batched",
                1.0,
                f"max |loop − batched| = {diff:.2g} nats",
            )
        )
    return rows
