"""Residual-stream flow: how much each block adds to the stream and what survives through depth.

The residual stream is the one vector per token that every block reads and adds to:
``x_post = x_pre + attn_out + mlp_out`` (``x_mid = x_pre + attn_out`` between the two sublayers of
a sequential block). Its norm is what a block changes; its direction is what the next block reads,
because a LayerNorm in front of every sublayer divides the norm out. Definitions, units and the
identities the tests check: docs/measures.md, "Activation fields", "Residual-stream flow".
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from phasescope.measures.tables import concat_tables, tidy

__all__ = ["residual_flow", "residual_table"]

MEASURE = "residual"


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` per token, NaN where the denominator is zero (a zero stream adds no share)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), math.nan)


def residual_flow(
    pre: Float[Tensor, "layer batch pos d_model"],
    post: Float[Tensor, "layer batch pos d_model"],
    attn_out: Float[Tensor, "layer batch pos d_model"],
    mlp_out: Float[Tensor, "layer batch pos d_model"] | None = None,
    mlp_in: Float[Tensor, "layer batch pos d_model"] | None = None,
) -> dict[str, Tensor]:
    """The norms of the stream around each block and the share each block and sublayer adds.

    Args:
        pre: the stream entering each block (``hook_resid_pre``).
        post: the stream the block hands on (``hook_resid_post``).
        attn_out: what the attention sublayer adds (``hook_attn_out``).
        mlp_out: what the MLP adds (``hook_mlp_out``); None for attention-only blocks.
        mlp_in: the stream the MLP's output is added to: ``hook_resid_mid`` in a sequential block,
            ``pre`` in a parallel one (the default when None).

    Returns:
        ``resid_norm_pre``, ``resid_norm_post`` ``[layer]``: mean of ``‖x‖`` over prompts and
        positions; ``resid_growth`` ``[layer]``: their ratio post / pre; ``block_share``,
        ``attn_share``, ``mlp_share`` ``[layer]``: means over tokens of ``‖Δx‖ / ‖x_pre‖``,
        ``‖attn_out‖ / ‖x_pre‖``, ``‖mlp_out‖ / ‖mlp_in‖`` (absent without an MLP);
        ``resid_norm_position`` ``[layer, pos]``: mean over prompts of ``‖x_post‖``.
    """
    pre, post, attn_out = pre.double(), post.double(), attn_out.double()
    pre_norm = pre.norm(dim=-1)  # [layer, batch, pos]
    post_norm = post.norm(dim=-1)
    out = {
        "resid_norm_pre": pre_norm.mean(dim=(1, 2)),
        "resid_norm_post": post_norm.mean(dim=(1, 2)),
        "block_share": _ratio((post - pre).norm(dim=-1), pre_norm).nanmean(dim=(1, 2)),
        "attn_share": _ratio(attn_out.norm(dim=-1), pre_norm).nanmean(dim=(1, 2)),
        "resid_norm_position": post_norm.mean(dim=1),
    }
    out["resid_growth"] = _ratio(out["resid_norm_post"], out["resid_norm_pre"])
    if mlp_out is not None:
        base = pre if mlp_in is None else mlp_in.double()
        out["mlp_share"] = _ratio(mlp_out.double().norm(dim=-1), base.norm(dim=-1)).nanmean(dim=(1, 2))
    return out


_ORDER = (
    "resid_norm_pre",
    "resid_norm_post",
    "resid_growth",
    "block_share",
    "attn_share",
    "mlp_share",
)


def residual_table(
    pre: Float[Tensor, "layer batch pos d_model"],
    post: Float[Tensor, "layer batch pos d_model"],
    attn_out: Float[Tensor, "layer batch pos d_model"],
    checkpoint: int,
    mlp_out: Float[Tensor, "layer batch pos d_model"] | None = None,
    mlp_in: Float[Tensor, "layer batch pos d_model"] | None = None,
) -> pd.DataFrame:
    """``residual_flow`` as a tidy table (measure ``residual``): per layer, and per layer and position.

    Args:
        pre, post, attn_out, mlp_out, mlp_in: as in ``residual_flow``.
        checkpoint: the training step.
    """
    flow = residual_flow(pre, post, attn_out, mlp_out, mlp_in)
    tables = [
        tidy(MEASURE, name, flow[name], ("layer",), checkpoint=checkpoint) for name in _ORDER if name in flow
    ]
    tables.append(
        tidy(
            MEASURE,
            "resid_norm_position",
            flow["resid_norm_position"],
            ("layer", "position"),
            checkpoint=checkpoint,
        )
    )
    return concat_tables(tables)
