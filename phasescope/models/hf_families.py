"""Every decoder family TransformerLens 3.9 reads, mapped from a local ``config.json``.

``phasescope.models.hf_convert`` holds the mapping machinery and the first four families (GPT-2, GPT-NeoX,
Llama, BERT); this module adds OPT, GPT-J, GPT-Neo, Mistral, Mixtral, Qwen2, Qwen3, Gemma 1/2/3,
Phi, Phi-3, OLMo 1/2/3 and Bloom, and holds the full table (``FAMILIES``) that loading consults.

Each mapping mirrors the branch of TransformerLens's ``convert_hf_model_config`` for that
architecture, but reads every shape and setting from the directory's own config (TransformerLens
hard-codes Gemma's and OLMo's shapes by model name). The weights are converted by TransformerLens's
own ``convert_*_weights``; a variant whose converter or HookedTransformer would compute something
other than the original model (biases it drops, a rope scaling it lacks, grouped-query attention its
converter does not split) is refused with the reason, never loaded approximately. The tests build a
tiny random model of each family with transformers and pin the logits and attention to the original.
"""

from __future__ import annotations

import math
from typing import Any

from transformer_lens.pretrained.weight_conversions import (
    convert_bloom_weights,
    convert_gemma_weights,
    convert_gptj_weights,
    convert_mistral_weights,
    convert_mixtral_weights,
    convert_neo_weights,
    convert_olmo2_weights,
    convert_olmo3_weights,
    convert_olmo_weights,
    convert_opt_weights,
    convert_phi3_weights,
    convert_phi_weights,
    convert_qwen2_weights,
    convert_qwen3_weights,
)

from phasescope.errors import ModelLoadError
from phasescope.models.hf_convert import CORE_FAMILIES, Family, act_fn, refuse, rope_settings

__all__ = ["FAMILIES", "REFUSED_MODEL_TYPES", "family_for_model_type"]

# model_type values TransformerLens 3.9 knows but phasescope does not load, and why.
REFUSED_MODEL_TYPES = {
    "gemma3": "the multimodal Gemma 3 (Gemma3ForConditionalGeneration); save its language model "
    "(Gemma3ForCausalLM, model_type gemma3_text) to load it",
    "olmoe": "mixture-of-experts OLMo is not supported (OLMoE's router has no TransformerLens test here)",
    "gpt_oss": "gpt-oss attention sinks add a logit outside the scores, so softmax(scores) is not the pattern",
    "qwen": "Qwen 1 needs remote code (trust_remote_code), which phasescope never runs",
    "apertus": "Apertus is not supported",
    "t5": "encoder-decoder T5 has no HookedTransformer attention to read",
    "hubert": "audio encoders have no token attention to read",
    "wav2vec2": "audio encoders have no token attention to read",
}


# TransformerLens's own configs of Qwen2/3, Phi and Bloom (as of GPT-NeoX) prepend no BOS: these models
# were trained without one, and their text prompts start without one too (phasescope.analysis.prompts).
_NO_BOS = False


def _d_head(cfg: Any) -> int:
    head_dim = getattr(cfg, "head_dim", None)
    return head_dim if head_dim else cfg.hidden_size // cfg.num_attention_heads


def _kv_heads(cfg: Any) -> int:
    return getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads


def _plain_rope(cfg: Any, rope: dict[str, Any] | None = None) -> float:
    """The rope base of a config without rope scaling; refuses any other rope type."""
    rope = rope_settings(cfg) if rope is None else rope
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise refuse(cfg, f"rope type {rope_type!r} is not supported (only unscaled rotary embeddings)")
    return float(rope.get("rope_theta", getattr(cfg, "rope_theta", None) or 10000.0))


def _rmsnorm_decoder(cfg: Any, *, gqa: bool = True) -> dict[str, Any]:
    """The fields Llama-style decoders share: RMSNorm, gated MLP, rotary on the whole head."""
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise refuse(cfg, "attention or MLP biases are dropped by TransformerLens's converter")
    n_kv = _kv_heads(cfg)
    if n_kv != cfg.num_attention_heads and not gqa:
        raise refuse(
            cfg, "grouped-query attention is not split by TransformerLens's converter for this family"
        )
    d_head = _d_head(cfg)
    return {
        "d_model": cfg.hidden_size,
        "d_head": d_head,
        "n_heads": cfg.num_attention_heads,
        "d_mlp": cfg.intermediate_size,
        "n_layers": cfg.num_hidden_layers,
        "n_ctx": cfg.max_position_embeddings,
        "eps": getattr(cfg, "rms_norm_eps", 1e-5),
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, getattr(cfg, "hidden_activation", None) or cfg.hidden_act),
        # HookedTransformer switches to grouped-query attention whenever this is not None.
        "n_key_value_heads": n_kv if n_kv != cfg.num_attention_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": _plain_rope(cfg),
        "final_rms": True,
        "gated_mlp": True,
    }


def _sliding(cfg: Any, layer_types: list[str] | None) -> dict[str, Any]:
    """Local attention for the layers the config marks ``sliding_attention`` (all when it has none)."""
    window = getattr(cfg, "sliding_window", None)
    if not window:
        return {"use_local_attn": False}
    if layer_types is None:
        layer_types = ["sliding_attention"] * cfg.num_hidden_layers
    if "sliding_attention" not in layer_types:
        return {"use_local_attn": False}
    return {
        "use_local_attn": True,
        "window_size": window,
        "attn_types": ["local" if t == "sliding_attention" else "global" for t in layer_types],
    }


def _opt_config(cfg: Any) -> dict[str, Any]:
    if not cfg.do_layer_norm_before:
        raise refuse(cfg, "do_layer_norm_before=False (post-LN OPT, e.g. opt-350m) is not supported")
    if cfg.word_embed_proj_dim != cfg.hidden_size:
        raise refuse(cfg, "word_embed_proj_dim != hidden_size (project_in/out) is not supported")
    if not getattr(cfg, "enable_bias", True) or not getattr(cfg, "layer_norm_elementwise_affine", True):
        raise refuse(cfg, "OPT without biases or LayerNorm weights is not supported")
    if getattr(cfg, "_remove_final_layer_norm", False):
        raise refuse(cfg, "OPT without a final LayerNorm is not supported")
    return {
        "d_model": cfg.hidden_size,
        "d_head": cfg.hidden_size // cfg.num_attention_heads,
        "n_heads": cfg.num_attention_heads,
        "d_mlp": cfg.ffn_dim,
        "n_layers": cfg.num_hidden_layers,
        "n_ctx": cfg.max_position_embeddings,
        "eps": 1e-5,  # OPT's LayerNorms use torch's default
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, cfg.activation_function),
        "normalization_type": "LN",
    }


def _gptj_config(cfg: Any) -> dict[str, Any]:
    return {
        "d_model": cfg.n_embd,
        "d_head": cfg.n_embd // cfg.n_head,
        "n_heads": cfg.n_head,
        "d_mlp": cfg.n_inner or 4 * cfg.n_embd,
        "n_layers": cfg.n_layer,
        "n_ctx": cfg.n_positions,
        "eps": cfg.layer_norm_epsilon,
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, cfg.activation_function),
        "parallel_attn_mlp": True,
        "positional_embedding_type": "rotary",
        "rotary_dim": cfg.rotary_dim or cfg.n_embd // cfg.n_head,
        "rotary_adjacent_pairs": True,  # GPT-J rotates interleaved pairs (rotate_every_two)
        "normalization_type": "LN",
    }


def _neo_config(cfg: Any) -> dict[str, Any]:
    kinds = list(cfg.attention_layers)
    return {
        "d_model": cfg.hidden_size,
        "d_head": cfg.hidden_size // cfg.num_heads,
        "n_heads": cfg.num_heads,
        "d_mlp": cfg.intermediate_size or 4 * cfg.hidden_size,
        "n_layers": cfg.num_layers,
        "n_ctx": cfg.max_position_embeddings,
        "eps": cfg.layer_norm_epsilon,
        "d_vocab": cfg.vocab_size,
        "attn_types": kinds,
        "act_fn": act_fn(cfg, cfg.activation_function),
        "use_attn_scale": False,  # GPT-Neo does not divide q·k by sqrt(d_head)
        "use_local_attn": "local" in kinds,
        "window_size": cfg.window_size,
        "normalization_type": "LN",
    }


def _mistral_config(cfg: Any) -> dict[str, Any]:
    out = _rmsnorm_decoder(cfg)
    # The Mistral and Mixtral converters always write the grouped-query parameters (_W_K, _W_V).
    out["n_key_value_heads"] = _kv_heads(cfg)
    out.update(_sliding(cfg, None))
    return out


def _mixtral_config(cfg: Any) -> dict[str, Any]:
    out = _mistral_config(cfg)
    out.update(
        num_experts=cfg.num_local_experts,
        experts_per_token=cfg.num_experts_per_tok,
        # Mixtral renormalises the top-k router weights; TransformerLens only when told to.
        norm_topk_prob=True,
    )
    return out


def _qwen_sliding(cfg: Any) -> None:
    if getattr(cfg, "use_sliding_window", False):
        raise refuse(
            cfg, "use_sliding_window=True (per-layer windows from max_window_layers) is not supported"
        )


def _qwen2_config(cfg: Any) -> dict[str, Any]:
    _qwen_sliding(cfg)
    # Qwen2 has q/k/v biases (its config has no attention_bias field), which its converter keeps.
    out = _rmsnorm_decoder(cfg)
    out["n_key_value_heads"] = _kv_heads(cfg)  # its converter always writes _W_K/_W_V
    out["default_prepend_bos"] = _NO_BOS
    return out


def _qwen3_config(cfg: Any) -> dict[str, Any]:
    _qwen_sliding(cfg)
    return {**_rmsnorm_decoder(cfg), "use_qk_norm": True, "default_prepend_bos": _NO_BOS}


def _gemma_common(cfg: Any) -> dict[str, Any]:
    out = _rmsnorm_decoder(cfg)
    # The Gemma converter always writes the grouped-query parameters (_W_K, _W_V).
    out["n_key_value_heads"] = _kv_heads(cfg)
    return out


def _gemma_config(cfg: Any) -> dict[str, Any]:
    return _gemma_common(cfg)


def _gemma2_config(cfg: Any) -> dict[str, Any]:
    out = _gemma_common(cfg)
    out.update(
        attn_scale=float(cfg.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=float(cfg.attn_logit_softcapping or -1.0),
        output_logits_soft_cap=float(cfg.final_logit_softcapping or -1.0),
        use_normalization_before_and_after=True,
        **_sliding(cfg, getattr(cfg, "layer_types", None)),
    )
    return out


def _global_rope_scaling(
    cfg: Any, full: dict[str, Any], allowed: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the full-attention layers' rope settings into plain settings and TransformerLens's
    scaling fields, for the one scaling the family's HookedTransformer applies to global layers only
    (Gemma 3: ``linear``; OLMo 3: ``yarn``). Sliding-window layers keep plain rope.

    Returns:
        (the settings with rope_type "default", the HookedTransformerConfig fields of the scaling).
    """
    rope_type = full.get("rope_type", full.get("type", "default"))
    if rope_type in (None, "default"):
        return full, {}
    if rope_type != allowed:
        raise refuse(cfg, f"rope type {rope_type!r} is not supported (only default and {allowed})")
    plain = {**full, "rope_type": "default"}
    factor = float(full["factor"])
    if rope_type == "linear":
        return plain, {"rotary_scaling_factor": factor}
    attention_factor = full.get("attention_factor")
    if attention_factor is None:
        if full.get("mscale") and full.get("mscale_all_dim"):
            raise refuse(cfg, "YaRN with mscale/mscale_all_dim is not supported")
        # transformers' default (get_mscale): 0.1 ln(factor) + 1 for factor > 1.
        attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return plain, {
        "use_yarn_rope": True,
        "yarn_global_attn_only": True,
        "yarn_factor": factor,
        "yarn_attention_factor": float(attention_factor),
        "yarn_beta_fast": float(full.get("beta_fast") or 32.0),
        "yarn_beta_slow": float(full.get("beta_slow") or 1.0),
        "yarn_original_max_position_embeddings": int(full["original_max_position_embeddings"]),
        "yarn_truncate": bool(full.get("truncate", True)),
    }


def _gemma3_config(cfg: Any) -> dict[str, Any]:
    rope = rope_settings(cfg)
    per_layer = "full_attention" in rope
    full = rope.get("full_attention", {}) if per_layer else rope
    local = rope.get("sliding_attention", {}) if per_layer else {}
    full, scaling = _global_rope_scaling(cfg, full, "linear")
    out = {**_gemma_common(_with_rope(cfg, full)), **scaling}
    if local:
        out["rotary_base_local"] = _plain_rope(cfg, local)
    elif getattr(cfg, "rope_local_base_freq", None):
        out["rotary_base_local"] = float(cfg.rope_local_base_freq)
    out.update(
        attn_scale=float(cfg.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=float(cfg.attn_logit_softcapping or -1.0),
        output_logits_soft_cap=float(cfg.final_logit_softcapping or -1.0),
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        **_sliding(cfg, getattr(cfg, "layer_types", None)),
    )
    return out


def _phi_config(cfg: Any) -> dict[str, Any]:
    if getattr(cfg, "qk_layernorm", False):
        raise refuse(cfg, "qk_layernorm=True is not handled by TransformerLens's Phi converter")
    if _kv_heads(cfg) != cfg.num_attention_heads:
        raise refuse(cfg, "grouped-query attention is not split by TransformerLens's Phi converter")
    rope = rope_settings(cfg)
    d_head = cfg.hidden_size // cfg.num_attention_heads
    factor = rope.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0))
    return {
        "d_model": cfg.hidden_size,
        "d_head": d_head,
        "n_heads": cfg.num_attention_heads,
        "d_mlp": cfg.intermediate_size,
        "n_layers": cfg.num_hidden_layers,
        "n_ctx": cfg.max_position_embeddings,
        "eps": cfg.layer_norm_eps,
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, cfg.hidden_act),
        "normalization_type": "LN",
        "positional_embedding_type": "rotary",
        "rotary_base": _plain_rope(cfg),
        "rotary_dim": round(factor * d_head),
        "rotary_adjacent_pairs": False,
        "parallel_attn_mlp": True,
        "default_prepend_bos": _NO_BOS,
    }


def _phi3_config(cfg: Any) -> dict[str, Any]:
    if rope_settings(cfg).get("partial_rotary_factor", 1.0) != 1.0:
        raise refuse(cfg, "partial rotary embeddings are not supported for Phi-3")
    out = _rmsnorm_decoder(cfg)
    out.update(_sliding(cfg, None))
    return out


def _olmo_config(cfg: Any) -> dict[str, Any]:
    # OLMo 1's LayerNorm has no weights and a fixed eps of 1e-5 (its config has no eps field).
    return {
        **_rmsnorm_decoder(cfg, gqa=False),
        "eps": 1e-5,
        "normalization_type": "LN",
        "final_rms": False,
        "clip_qkv": getattr(cfg, "clip_qkv", None),
    }


def _olmo2_config(cfg: Any) -> dict[str, Any]:
    return _rmsnorm_decoder(cfg, gqa=False)


def _olmo3_config(cfg: Any) -> dict[str, Any]:
    rope = rope_settings(cfg)
    per_layer = "full_attention" in rope
    full = rope.get("full_attention", {}) if per_layer else rope
    local = rope.get("sliding_attention", {}) if per_layer else {}
    full, scaling = _global_rope_scaling(cfg, full, "yarn")
    out = {**_rmsnorm_decoder(_with_rope(cfg, full)), **scaling}
    # The OLMo 3 converter keys the k norm on whether n_key_value_heads is set: always set it.
    out["n_key_value_heads"] = _kv_heads(cfg)
    if local and _plain_rope(cfg, local) != out["rotary_base"]:
        out["rotary_base_local"] = _plain_rope(cfg, local)
    out.update(_sliding(cfg, getattr(cfg, "layer_types", None)))
    return out


def _bloom_config(cfg: Any) -> dict[str, Any]:
    if getattr(cfg, "apply_residual_connection_post_layernorm", False):
        raise refuse(cfg, "apply_residual_connection_post_layernorm=True is not supported")
    return {
        "d_model": cfg.hidden_size,
        "d_head": cfg.hidden_size // cfg.n_head,
        "n_heads": cfg.n_head,
        "d_mlp": 4 * cfg.hidden_size,
        "n_layers": cfg.n_layer,
        "n_ctx": 2048,  # ALiBi has no position table; TransformerLens caps Bloom at 2048 as well
        "d_vocab": cfg.vocab_size,
        "act_fn": "gelu_fast",  # Bloom's own tanh approximation of GELU
        "eps": cfg.layer_norm_epsilon,
        "normalization_type": "LN",
        "post_embedding_ln": True,
        "positional_embedding_type": "alibi",
        "default_prepend_bos": _NO_BOS,
    }


class _RopeView:
    """A config seen with one layer type's rope settings (Gemma 3 and OLMo 3 keep one per type)."""

    def __init__(self, cfg: Any, rope: dict[str, Any]) -> None:
        self._cfg, self.rope_parameters = cfg, rope

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cfg, name)


def _with_rope(cfg: Any, rope: dict[str, Any]) -> Any:
    return _RopeView(cfg, rope)


def _no_bos(config: Any) -> Any:
    """A config mapping whose models were trained without a BOS token first (TransformerLens's own
    ``default_prepend_bos=False`` for Qwen2/3, Phi and Bloom), so prompts are framed without one."""

    def mapped(cfg: Any) -> dict[str, Any]:
        return {**config(cfg), "default_prepend_bos": False}

    return mapped


def _decoder(name: str, model_types: tuple[str, ...], hf_class: str, config: Any, convert: Any) -> Family:
    return Family(name, model_types, hf_class, hf_class, True, ("lm_head.",), config, convert)


FAMILIES: tuple[Family, ...] = CORE_FAMILIES + (
    _decoder("opt", ("opt",), "OPTForCausalLM", _opt_config, convert_opt_weights),
    _decoder("gpt-j", ("gptj",), "GPTJForCausalLM", _gptj_config, convert_gptj_weights),
    _decoder("gpt-neo", ("gpt_neo",), "GPTNeoForCausalLM", _neo_config, convert_neo_weights),
    _decoder("mistral", ("mistral",), "MistralForCausalLM", _mistral_config, convert_mistral_weights),
    _decoder("mixtral", ("mixtral",), "MixtralForCausalLM", _mixtral_config, convert_mixtral_weights),
    _decoder("qwen2", ("qwen2",), "Qwen2ForCausalLM", _no_bos(_qwen2_config), convert_qwen2_weights),
    _decoder("qwen3", ("qwen3",), "Qwen3ForCausalLM", _no_bos(_qwen3_config), convert_qwen3_weights),
    _decoder("gemma", ("gemma",), "GemmaForCausalLM", _gemma_config, convert_gemma_weights),
    _decoder("gemma2", ("gemma2",), "Gemma2ForCausalLM", _gemma2_config, convert_gemma_weights),
    _decoder("gemma3", ("gemma3_text",), "Gemma3ForCausalLM", _gemma3_config, convert_gemma_weights),
    _decoder("phi", ("phi",), "PhiForCausalLM", _no_bos(_phi_config), convert_phi_weights),
    _decoder("phi3", ("phi3",), "Phi3ForCausalLM", _phi3_config, convert_phi3_weights),
    _decoder("olmo", ("olmo",), "OlmoForCausalLM", _olmo_config, convert_olmo_weights),
    _decoder("olmo2", ("olmo2",), "Olmo2ForCausalLM", _olmo2_config, convert_olmo2_weights),
    _decoder("olmo3", ("olmo3",), "Olmo3ForCausalLM", _olmo3_config, convert_olmo3_weights),
    _decoder("bloom", ("bloom",), "BloomForCausalLM", _no_bos(_bloom_config), convert_bloom_weights),
)


def family_for_model_type(model_type: str | None, *, where: str) -> Family:
    """The family for a ``config.json`` ``model_type``, or ModelLoadError naming the supported ones.

    Args:
        model_type: the ``model_type`` field (None when the config has none).
        where: the directory's name, for the message.
    """
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.name} (model_type {'/'.join(f.model_types)})" for f in FAMILIES)
    why = REFUSED_MODEL_TYPES.get(model_type or "", "it is not a family TransformerLens 3.9 converts")
    raise ModelLoadError(
        f"{where}: model_type {model_type!r} is not supported: {why}. phasescope loads local Hugging "
        f"Face models of these families: {supported}",
        field="model",
        choices=[f.name for f in FAMILIES],
        model_type=model_type,
    )
