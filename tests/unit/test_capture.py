"""capture_attention: the scores without logits are those of the full pass, which it cuts short."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from phasescope.analysis.run import capture_attention


def _model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=50, n_ctx=12, act_fn="gelu", seed=0
    )
    return HookedTransformer(cfg).eval()


def test_scores_without_logits_equal_the_full_pass_and_skip_the_rest() -> None:
    model = _model()
    tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    logits, full = capture_attention(model, tokens, want_logits=True, dtype=torch.float64)
    assert logits is not None and logits.shape == (3, 12, 50)
    calls: list[str] = []
    model.add_hook("blocks.1.hook_mlp_out", lambda t, hook: calls.append(hook.name))
    try:
        none, short = capture_attention(model, tokens, want_logits=False, dtype=torch.float64)
        assert none is None and calls == []  # the last MLP never ran
        capture_attention(model, tokens, want_logits=True)
        assert calls == ["blocks.1.hook_mlp_out"]  # the hook itself works
    finally:
        model.reset_hooks()
    assert short.shape == (2, 3, 2, 12, 12) and short.dtype == torch.float64
    assert torch.equal(short, full)
    assert torch.isneginf(short[..., 0, 1:]).all()  # causal: -inf above the diagonal
    # The model is usable afterwards: no hook of ours is left behind.
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
