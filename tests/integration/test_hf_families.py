"""Every decoder family TransformerLens 3.9 reads, loaded by phasescope from a local HF directory.

For each family a tiny random model is built with transformers (its own config class, 2 layers,
grouped-query attention and rotary embeddings where the family has them, weights drawn wide enough
that attention is far from uniform), saved once under a model root, loaded through
``phasescope.models.loading.load_model``, and compared with the transformers model on the same tokens:
logits (the conversion, rotary included), the per-head attention probabilities transformers returns
with eager attention, and the true pre-softmax scores (``softmax(scores) == pattern``, scores are not
the pattern). The network is blocked: nothing may reach the hub.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf

from phasescope.config import Settings
from phasescope.errors import ModelLoadError
from phasescope.models.hf import attention_hook_names, load_hf_directory
from phasescope.models.hf_families import FAMILIES, REFUSED_MODEL_TYPES
from phasescope.models.loading import LoadedModel, load_model

VOCAB, SEQ, WINDOW = 64, 10, 4  # WINDOW < SEQ: sliding-window layers really cut keys off
WIDE = 0.3  # init std; transformers' 0.02 gives near-uniform attention that would hide score errors
IDS = {"bos_token_id": 0, "eos_token_id": 1}
SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
    "initializer_range": WIDE,
    "pad_token_id": 2,
    **IDS,
}
GQA = {**SMALL, "num_key_value_heads": 2}  # two query heads per key/value head

# family -> (builder, key/value heads, rotary). head_dim 16 != hidden/heads where the family allows it,
# and a rope base other than the default, so that both must be read from config.json.
BUILDERS: dict[str, tuple[Callable[[], Any], int, bool]] = {
    "opt": (
        lambda: tf.OPTForCausalLM(
            tf.OPTConfig(
                num_hidden_layers=2,
                hidden_size=32,
                num_attention_heads=4,
                ffn_dim=64,
                vocab_size=VOCAB,
                max_position_embeddings=64,
                word_embed_proj_dim=32,
                init_std=WIDE,
                pad_token_id=2,
                **IDS,
            )
        ),
        4,
        False,
    ),
    "gpt-j": (
        lambda: tf.GPTJForCausalLM(
            tf.GPTJConfig(
                n_layer=2,
                n_embd=32,
                n_head=4,
                rotary_dim=4,
                vocab_size=VOCAB,
                n_positions=64,
                initializer_range=WIDE,
                **IDS,
            )
        ),
        4,
        True,
    ),
    "gpt-neo": (
        lambda: tf.GPTNeoForCausalLM(
            tf.GPTNeoConfig(
                num_layers=2,
                hidden_size=32,
                num_heads=4,
                attention_types=[[["global", "local"], 1]],
                window_size=WINDOW,
                vocab_size=VOCAB,
                max_position_embeddings=64,
                initializer_range=WIDE,
                **IDS,
            )
        ),
        4,
        False,
    ),
    "mistral": (
        lambda: tf.MistralForCausalLM(
            tf.MistralConfig(**GQA, head_dim=16, sliding_window=WINDOW, rope_theta=500.0)
        ),
        2,
        True,
    ),
    "mixtral": (
        lambda: tf.MixtralForCausalLM(tf.MixtralConfig(**GQA, num_local_experts=4, num_experts_per_tok=2)),
        2,
        True,
    ),
    "qwen2": (lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**GQA, rope_theta=500.0)), 2, True),
    "qwen3": (lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**GQA, head_dim=16)), 2, True),
    "gemma": (lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**GQA, head_dim=16)), 2, True),
    "gemma2": (
        lambda: tf.Gemma2ForCausalLM(
            tf.Gemma2Config(
                **GQA,
                head_dim=16,
                query_pre_attn_scalar=12,
                sliding_window=WINDOW,
                attn_logit_softcapping=5.0,
                final_logit_softcapping=3.0,
            )
        ),
        2,
        True,
    ),
    "gemma3": (
        lambda: tf.Gemma3ForCausalLM(
            tf.Gemma3TextConfig(
                **GQA,
                head_dim=16,
                query_pre_attn_scalar=12,
                sliding_window=WINDOW,
                layer_types=["sliding_attention", "full_attention"],
            )
        ),
        2,
        True,
    ),
    # Rope scaling on the full-attention layers only (sliding layers keep plain rope, another base).
    "gemma3-linear": (
        lambda: tf.Gemma3ForCausalLM(
            tf.Gemma3TextConfig(
                **GQA,
                head_dim=16,
                query_pre_attn_scalar=12,
                sliding_window=WINDOW,
                layer_types=["sliding_attention", "full_attention"],
                rope_parameters={
                    "full_attention": {"rope_type": "linear", "rope_theta": 1000.0, "factor": 8.0},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                },
            )
        ),
        2,
        True,
    ),
    "phi": (lambda: tf.PhiForCausalLM(tf.PhiConfig(**SMALL)), 4, True),  # partial rotary (0.5)
    "phi3": (lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**GQA)), 2, True),
    "olmo": (lambda: tf.OlmoForCausalLM(tf.OlmoConfig(**SMALL, clip_qkv=2.0)), 4, True),
    "olmo2": (lambda: tf.Olmo2ForCausalLM(tf.Olmo2Config(**SMALL)), 4, True),
    "olmo3": (
        lambda: tf.Olmo3ForCausalLM(
            tf.Olmo3Config(**GQA, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])
        ),
        2,
        True,
    ),
    "olmo3-yarn": (
        lambda: tf.Olmo3ForCausalLM(
            tf.Olmo3Config(
                **GQA,
                sliding_window=WINDOW,
                layer_types=["sliding_attention", "full_attention"],
                rope_parameters={
                    "full_attention": {
                        "rope_type": "yarn",
                        "rope_theta": 500.0,
                        "factor": 4.0,
                        "original_max_position_embeddings": 16,
                        "attention_factor": 1.2,
                    },
                    "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
                },
            )
        ),
        2,
        True,
    ),
    "bloom": (
        lambda: tf.BloomForCausalLM(
            tf.BloomConfig(
                n_layer=2,
                hidden_size=32,
                n_head=4,
                vocab_size=VOCAB,
                initializer_range=WIDE,
                pad_token_id=2,
                **IDS,
            )
        ),
        4,
        False,
    ),
}
SLIDING = {  # local layers
    "gpt-neo": [1],
    "mistral": [0, 1],
    "gemma2": [0],
    "gemma3": [0],
    "gemma3-linear": [0],
    "olmo3": [0],
    "olmo3-yarn": [0],
}


@pytest.fixture(autouse=True)
def _offline(no_network: None) -> None:
    """Every test here loads from disk only (the conftest's no_network fails any connection)."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def settings(root: Path) -> Settings:
    """A data directory whose <data_dir>/models is the model root every family is saved under."""
    return Settings(data_dir=root / "data", model_roots=[root / "extra"])


def _build(name: str) -> Any:
    torch.manual_seed(sum(map(ord, name)))
    model = BUILDERS[name][0]()
    with torch.no_grad():
        # Norm weights start at exactly 1 (or 0 where the norm adds 1): move them, so that a
        # converter that drops a norm weight or its +1 cannot pass.
        for key, param in model.named_parameters():
            if "norm" in key and param.dim() == 1:
                param.add_(0.2 * torch.randn_like(param))
            if key.endswith(("q_norm.weight", "k_norm.weight")):
                param.add_(2.0)  # normalised queries and keys: widen them, or attention stays near uniform
    model.config._attn_implementation = "eager"  # so it returns its attention probabilities
    return model.eval()


@pytest.fixture(scope="module")
def saved(settings: Settings) -> Iterator[dict[str, Any]]:
    """Every family built and saved once under <data_dir>/models/<family>; the HF models kept."""
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes on tiny configs
        for name in BUILDERS:
            models[name] = _build(name)
            models[name].save_pretrained(settings.data_dir / "models" / name)
    yield models


def _family(name: str) -> str:
    """The family a builder's model belongs to ("olmo3-yarn" is an OLMo 3 with YaRN)."""
    return name.removesuffix("-linear").removesuffix("-yarn")


def _tokens() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))  # (batch, pos)


def test_every_decoder_family_transformer_lens_reads_is_in_the_table() -> None:
    names = {family.name for family in FAMILIES}
    assert {_family(name) for name in BUILDERS} <= names
    assert {"gpt2", "gpt-neox", "llama", "bert"} <= names
    types = [t for family in FAMILIES for t in family.model_types]
    assert len(types) == len(set(types))
    assert not set(types) & set(REFUSED_MODEL_TYPES)


@pytest.mark.parametrize("family", list(BUILDERS))
def test_family_loads_with_the_models_own_logits_scores_and_attention(
    family: str, saved: dict[str, Any], settings: Settings
) -> None:
    hf = saved[family]
    loaded: LoadedModel = load_model(family, settings=settings)  # a relative name, found under the root
    assert loaded.family == _family(family) and loaded.causal and loaded.has_lm_head
    cfg = loaded.model.cfg
    _, n_kv, rotary = BUILDERS[family]
    assert (cfg.n_key_value_heads or cfg.n_heads) == n_kv
    assert (cfg.positional_embedding_type == "rotary") is rotary
    # Prompts start with BOS only for families trained that way (TransformerLens's own defaults).
    assert cfg.default_prepend_bos is (family not in ("qwen2", "qwen3", "phi", "bloom"))
    if family in ("mistral", "qwen2", "olmo3-yarn"):
        assert cfg.rotary_base == 500.0
    if family in ("mistral", "qwen3", "gemma", "gemma2", "gemma3", "gemma3-linear"):
        assert cfg.d_head == 16
    if family == "olmo3-yarn":
        assert cfg.use_yarn_rope and cfg.yarn_global_attn_only and cfg.rotary_base_local == 50.0
    if family == "gemma3-linear":
        assert cfg.rotary_scaling_factor == 8.0 and cfg.rotary_base_local == 100.0

    tokens = _tokens()
    with torch.no_grad():
        theirs = hf(tokens, output_attentions=True)
        logits, cache = loaded.model.run_with_cache(tokens)
    # (b) the conversion, rotary included: the same logits on the same tokens.
    assert theirs.logits.abs().mean() > 0.5  # not a degenerate model
    torch.testing.assert_close(logits, theirs.logits, atol=1e-4, rtol=0)

    scores_names, pattern_names = attention_hook_names(loaded.model)
    causal = torch.ones(SEQ, SEQ).triu(1).bool()  # (query, key): keys after the query
    for layer, (s_name, p_name) in enumerate(zip(scores_names, pattern_names, strict=True)):
        scores, pattern = cache[s_name], cache[p_name]  # (batch, head, query, key), one per query head
        assert scores.shape == pattern.shape == (2, 4, SEQ, SEQ)
        # (a) true pre-softmax scores: their softmax is the pattern, and they are not the pattern.
        torch.testing.assert_close(scores.softmax(-1), pattern, atol=1e-6, rtol=0)
        finite = torch.isfinite(scores)
        assert not torch.allclose(scores[finite], pattern[finite], atol=1e-3)
        masked = causal.clone()
        if layer in SLIDING.get(family, []):
            masked |= torch.ones(SEQ, SEQ).tril(-WINDOW).bool()  # keys WINDOW or more back
        assert torch.isneginf(scores[..., masked]).all() and finite[..., ~masked].all()
        # (c) the per-head probabilities transformers itself computes.
        torch.testing.assert_close(pattern, theirs.attentions[layer], atol=1e-5, rtol=0)
        # Attention is far from uniform, so a wrong scale or rotation could not hide in (b) and (c).
        entropy = -(pattern * pattern.clamp_min(1e-30).log()).sum(-1)[..., -1].mean()
        assert entropy < 0.8 * torch.log(torch.tensor(float(SEQ)))
    if n_kv < 4:
        # Two query heads share each key/value head, yet their patterns differ: queries are per head.
        assert not torch.allclose(cache[pattern_names[0]][:, 0], cache[pattern_names[0]][:, 1], atol=1e-3)


def test_variants_transformer_lens_would_compute_differently_are_refused(settings: Settings) -> None:
    cases = {
        "olmo-gqa": (tf.OlmoForCausalLM(tf.OlmoConfig(**GQA)), "grouped-query"),
        "qwen2-window": (
            tf.Qwen2ForCausalLM(tf.Qwen2Config(**GQA, use_sliding_window=True, sliding_window=4)),
            "use_sliding_window",
        ),
        "opt-postln": (
            tf.OPTForCausalLM(
                tf.OPTConfig(
                    num_hidden_layers=2,
                    hidden_size=32,
                    num_attention_heads=4,
                    ffn_dim=64,
                    vocab_size=VOCAB,
                    word_embed_proj_dim=32,
                    do_layer_norm_before=False,
                )
            ),
            "do_layer_norm_before",
        ),
        "phi-qk-ln": (tf.PhiForCausalLM(tf.PhiConfig(**SMALL, qk_layernorm=True)), "qk_layernorm"),
        "mistral-yarn": (
            tf.MistralForCausalLM(
                tf.MistralConfig(
                    **GQA, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}
                )
            ),
            "rope type",
        ),
        "olmoe": (
            tf.OlmoeForCausalLM(tf.OlmoeConfig(**GQA, num_experts=4, num_experts_per_tok=2)),
            "mixture-of-experts",
        ),
    }
    for name, (model, reason) in cases.items():
        model.save_pretrained(settings.data_dir / "models" / name)
        with pytest.raises(ModelLoadError, match=reason) as info:
            load_hf_directory(settings.data_dir / "models" / name, "cpu")
        assert model.config.model_type in str(info.value), name
    assert [f.name for f in FAMILIES] == info.value.choices
