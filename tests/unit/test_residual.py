"""Residual-stream flow (docs/measures.md, "Residual-stream flow") and the extra hooks of the shared
forward pass: a zeroed block conserves the norm exactly, the stream is handed on unchanged between
blocks, hand-built sublayer outputs give their analytic shares, and the captured activations are the
model's own, also when the pass stops early."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from phasescope.analysis.inputs import Batch
from phasescope.analysis.run import capture_forward, extra_hook_names, measure_checkpoint
from phasescope.measures.registry import get_measure
from phasescope.measures.residual import residual_flow
from phasescope.models.loading import LoadedModel, ModelRef
from phasescope.schemas import InputSpec


def _model(attn_only: bool = False, n_layers: int = 3) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=32,
        n_heads=2,
        d_head=16,
        d_mlp=None if attn_only else 64,
        d_vocab=20,
        n_ctx=12,
        act_fn="gelu",
        attn_only=attn_only,
        dtype=torch.float64,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(cfg).eval()


def _tokens(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 20, (n, 12), generator=torch.Generator().manual_seed(1))


def _residual(model: HookedTransformer) -> dict[tuple[str, int], float]:
    tokens = _tokens()
    loaded = LoadedModel(ModelRef("built", "series", "built"), 0, model)
    table = measure_checkpoint(
        loaded, ["residual"], InputSpec(), batch=Batch(tokens, torch.ones_like(tokens, dtype=torch.bool))
    )
    per_layer = table[table["position"].isna()]
    return {(str(r.quantity), int(r.layer)): float(r.value) for r in per_layer.itertuples()}


def test_a_zeroed_block_conserves_the_norm_exactly() -> None:
    model = _model()
    with torch.no_grad():
        for p in model.blocks[1].parameters():  # weights, biases and LayerNorm gains of block 1
            p.zero_()
    flow = _residual(model)
    assert flow[("resid_growth", 1)] == 1.0
    assert flow[("resid_norm_post", 1)] == flow[("resid_norm_pre", 1)]
    assert flow[("block_share", 1)] == flow[("attn_share", 1)] == flow[("mlp_share", 1)] == 0.0
    for layer in (0, 2):  # the blocks left alone do add to the stream
        assert flow[("block_share", layer)] > 0.01 and flow[("resid_growth", layer)] != 1.0


def test_the_stream_is_handed_on_unchanged_between_blocks() -> None:
    model = _model()
    tokens = _tokens()
    loaded = LoadedModel(ModelRef("built", "series", "built"), 0, model)
    table = measure_checkpoint(
        loaded, ["residual"], InputSpec(), batch=Batch(tokens, torch.ones_like(tokens, dtype=torch.bool))
    )
    norm = {
        (q, int(layer)): v
        for q, layer, v in table[table["position"].isna()][["quantity", "layer", "value"]].values
    }
    for layer in (0, 1):
        assert norm[("resid_norm_post", layer)] == pytest.approx(
            norm[("resid_norm_pre", layer + 1)], rel=1e-14
        )
    # The per-position norms average (equal prompts per position) to the layer's post norm.
    position = table[table["quantity"] == "resid_norm_position"]
    assert len(position) == 3 * 12
    means = position.groupby("layer")["value"].mean()
    for layer in range(3):
        assert means[layer] == pytest.approx(norm[("resid_norm_post", layer)], rel=1e-12)
    # Every row it emits is declared, with the declared dims.
    entry = get_measure("residual")
    assert set(table["quantity"]) == {q.name for q in entry.quantities}


def test_hand_built_sublayers_give_their_shares() -> None:
    # One layer, one prompt, two tokens in 3 dimensions: x_pre = 3 e1, attention adds 4 e2, the MLP
    # adds 12 e3 to x_mid = (3, 4, 0) (‖x_mid‖ = 5); x_post = (3, 4, 12), ‖x_post‖ = 13.
    e = torch.eye(3, dtype=torch.float64)
    pre = (3 * e[0]).expand(1, 1, 2, 3)
    attn = (4 * e[1]).expand(1, 1, 2, 3)
    mlp = (12 * e[2]).expand(1, 1, 2, 3)
    mid, post = pre + attn, pre + attn + mlp
    flow = residual_flow(pre, post, attn, mlp, mid)
    assert flow["resid_norm_pre"].item() == pytest.approx(3.0)
    assert flow["resid_norm_post"].item() == pytest.approx(13.0)
    assert flow["resid_growth"].item() == pytest.approx(13 / 3)
    assert flow["block_share"].item() == pytest.approx((16 + 144) ** 0.5 / 3)  # ‖(0, 4, 12)‖ / 3
    assert flow["attn_share"].item() == pytest.approx(4 / 3)
    assert flow["mlp_share"].item() == pytest.approx(12 / 5)
    # A parallel block (no mid): the MLP's share is taken against the block's input.
    assert residual_flow(pre, post, attn, mlp)["mlp_share"].item() == pytest.approx(4.0)
    # A zero stream has no share: NaN, not a division by zero.
    zero = torch.zeros(1, 1, 2, 3, dtype=torch.float64)
    assert torch.isnan(residual_flow(zero, zero, zero)["block_share"]).all()


def test_attention_only_models_have_no_mlp_rows_and_no_error() -> None:
    flow = _residual(_model(attn_only=True, n_layers=2))
    assert {q for q, _ in flow} == {
        "resid_norm_pre",
        "resid_norm_post",
        "resid_growth",
        "block_share",
        "attn_share",
    }
    # Without an MLP the block adds exactly what the attention adds.
    for layer in (0, 1):
        assert flow[("block_share", layer)] == pytest.approx(flow[("attn_share", layer)], rel=1e-12)


@pytest.mark.parametrize("attn_only", [False, True])
def test_extra_hooks_are_the_models_own_also_when_the_pass_stops_early(attn_only: bool) -> None:
    model = _model(attn_only=attn_only)
    tokens = _tokens()
    hooks = (
        "hook_resid_pre",
        "hook_resid_mid",
        "hook_attn_out",
        "hook_mlp_out",
        "hook_resid_post",
        "mlp.hook_pre",
    )
    names = extra_hook_names(model, hooks)
    expected = 3 * (3 if attn_only else 6)  # resid_pre, attn_out, resid_post (+ the MLP three)
    assert len(names) == expected  # the MLP hooks of an attention-only block never fire: not asked for
    _, cache = model.run_with_cache(tokens)
    # Without logits the pass stops at the last hook it needs (here the last block's output).
    capture = capture_forward(model, tokens, want_logits=False, dtype=torch.float64, hooks=hooks)
    assert capture.logits is None and sorted(capture.activations) == sorted(names)
    for name in names:
        assert torch.equal(capture.activations[name], cache[name]), name
    # The default measures name no hooks: their pass keeps no activation.
    assert capture_forward(model, tokens, want_logits=False).activations == {}
    assert all(not get_measure(m).hooks for m in ("loss", "heads", "entropy", "thermo", "spectra"))


def test_findings_test_per_layer_series_and_skip_unmeasured_checkpoints() -> None:
    """Per-layer order parameters (layer set, head empty) are one series per layer; a per-head series
    that is NaN where nothing could be fitted is tested on its measured checkpoints, or not at all."""
    import numpy as np
    import pandas as pd

    from phasescope.phases.findings import find_transitions

    steps = np.unique(np.geomspace(25, 6400, 14).round()).astype(int)
    rise = 1.0 / (1.0 + np.exp(-(np.log(steps) - np.log(400.0)) / 0.15))
    wiggle = 0.01 * np.sin(np.arange(len(steps)) * 2.3)
    rows = []
    for layer, values in ((0, 1.2 + wiggle), (1, 1.0 + rise + wiggle)):
        rows.append(
            pd.DataFrame({"measure": "residual", "quantity": "resid_growth", "layer": layer, "value": values})
        )
    # A correlation length measured only at the first four checkpoints: too few to test.
    sparse = np.where(np.arange(len(steps)) < 4, 20.0 + wiggle, np.nan)
    rows.append(
        pd.DataFrame(
            {
                "measure": "correlation",
                "quantity": "attention_correlation_length",
                "layer": 0,
                "head": 0,
                "value": sparse,
            }
        )
    )
    table = pd.concat([r.assign(checkpoint=steps) for r in rows], ignore_index=True)
    table["layer"] = table["layer"].astype("Int64")
    table["head"] = table["head"].astype("Int64")
    found = find_transitions(table, n_boot=10)
    ours = [(t["quantity"], t["layer"], t["head"]) for t in found["transitions"]]
    assert ours == [("resid_growth", 1, None)]
    assert abs(np.log(found["transitions"][0]["step"] / 400.0)) < 0.2
    assert "residual growth" in found["summary"] and "layer 1" in found["summary"]
