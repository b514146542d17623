"""Hugging Face configs and weights -> TransformerLens 3.9, per architecture family, fully offline.

TransformerLens can convert a local directory itself (``convert_hf_model_config(path)``), but in 3.9
that path is not safe to use on arbitrary directories:

- it picks the architecture from the *path string* before reading ``config.json``: any directory whose
  path contains "llama" or "gemma" skips the config (and then fails), and one containing e.g.
  "Llama-3.2-1B" silently gets that model's hard-coded shape;
- its GPT-2 branch reads ``hf_config.n_ctx``, which configs saved by transformers 5 no longer have;
- it maps only ``architectures[0]``, so a bare ``BertModel`` or ``GPT2Model`` directory is refused.

So this module maps the HF config to ``HookedTransformerConfig`` fields itself, family by family,
mirroring TransformerLens's own branches (and reusing its helpers for rotary settings), refuses the
variants TransformerLens would compute differently from the original model, and leaves the weight
conversion to TransformerLens's ``convert_*_weights``. Each family is selected by ``model_type``, which
every ``config.json`` carries regardless of which head class saved it.

This module holds the machinery and the first four families (``CORE_FAMILIES``: GPT-2, GPT-NeoX,
Llama, BERT); ``phasescope.models.hf_families`` adds every other decoder family TransformerLens 3.9 reads and
holds the full table that loading consults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformer_lens.loading_from_pretrained as tl_loading
from transformer_lens.pretrained.weight_conversions import (
    convert_bert_weights,
    convert_gpt2_weights,
    convert_llama_weights,
    convert_neox_weights,
)
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

from phasescope.errors import ModelLoadError

__all__ = [
    "CORE_FAMILIES",
    "DEFAULT_MAX_CTX",
    "Family",
    "act_fn",
    "refuse",
    "rope_settings",
    "tl_config_dict",
]

# Causal families get n_ctx = min(max_position_embeddings, this). TransformerLens allocates an
# n_ctx x n_ctx causal mask (and rotary tables) per layer, so a Llama with 131072 positions would need
# tens of GB; TransformerLens caps its own Llama configs at 2048 for the same reason. Capping changes
# no number for sequences up to the cap (rotary frequencies do not depend on n_ctx).
DEFAULT_MAX_CTX = 2048

ConfigFn = Callable[[Any], dict[str, Any]]
ConvertFn = Callable[[Any, Any], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """One architecture family we can load from a local Hugging Face directory.

    Attributes:
        name: our name for it (``LoadedHF.family``).
        model_types: the ``config.json`` ``model_type`` values that select it.
        hf_class: the transformers class loaded (the one with the head TransformerLens converts).
        tl_architecture: ``cfg.original_architecture`` as TransformerLens names it.
        causal: decoder with a causal mask (HookedTransformer) or bidirectional encoder (HookedEncoder).
        head_prefixes: state-dict prefixes of the LM head; missing ones mean the logits are untrained.
        optional_prefixes: other parts a directory may lack (pooler, NSP head) without consequence for
            attention or logits; any other missing weight is refused.
        config: HF config -> HookedTransformerConfig keyword arguments.
        convert: (HF model, HookedTransformerConfig) -> TransformerLens state dict.
    """

    name: str
    model_types: tuple[str, ...]
    hf_class: str
    tl_architecture: str
    causal: bool
    head_prefixes: tuple[str, ...]
    config: ConfigFn
    convert: ConvertFn
    optional_prefixes: tuple[str, ...] = ()


def refuse(cfg: Any, reason: str) -> ModelLoadError:
    """The error for a variant of a family TransformerLens would compute differently (names the family)."""
    return ModelLoadError(
        f"{cfg.model_type} model: {reason}; TransformerLens would not reproduce its attention scores",
        model_type=cfg.model_type,
    )


def act_fn(cfg: Any, name: str) -> str:
    """``name`` when TransformerLens implements that activation, else the refusal."""
    if name not in SUPPORTED_ACTIVATIONS:
        raise refuse(cfg, f"activation {name!r} is not one TransformerLens implements")
    return name


def rope_settings(cfg: Any) -> dict[str, Any]:
    """The config's rope settings as one dict (``rope_parameters`` in transformers 5, ``rope_scaling`` in 4)."""
    # transformers 5 keeps rope settings in rope_parameters, 4.x in rope_theta/rope_scaling.
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return dict(params)


def _gpt2_config(cfg: Any) -> dict[str, Any]:
    if getattr(cfg, "add_cross_attention", False):
        raise refuse(cfg, "cross-attention (encoder-decoder GPT-2) is not supported")
    return {
        "d_model": cfg.n_embd,
        "d_head": cfg.n_embd // cfg.n_head,
        "n_heads": cfg.n_head,
        # TransformerLens's own branch always uses 4 * n_embd; n_inner overrides it in HF.
        "d_mlp": cfg.n_inner or 4 * cfg.n_embd,
        "n_layers": cfg.n_layer,
        "n_ctx": cfg.n_positions,
        "eps": cfg.layer_norm_epsilon,
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, cfg.activation_function),
        "use_attn_scale": getattr(cfg, "scale_attn_weights", True),
        "use_local_attn": False,
        "scale_attn_by_inverse_layer_idx": getattr(cfg, "scale_attn_by_inverse_layer_idx", False),
        "normalization_type": "LN",
    }


def _bert_style_dims(cfg: Any) -> dict[str, Any]:
    """The shape fields GPT-NeoX and BERT configs name alike (hidden_size, intermediate_size, ...)."""
    return {
        "d_model": cfg.hidden_size,
        "d_head": cfg.hidden_size // cfg.num_attention_heads,
        "n_heads": cfg.num_attention_heads,
        "d_mlp": cfg.intermediate_size,
        "n_layers": cfg.num_hidden_layers,
        "n_ctx": cfg.max_position_embeddings,
        "eps": cfg.layer_norm_eps,
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, cfg.hidden_act),
    }


def _neox_config(cfg: Any) -> dict[str, Any]:
    if not getattr(cfg, "attention_bias", True):
        raise refuse(cfg, "attention_bias=False is not handled by TransformerLens's GPT-NeoX converter")
    rope = rope_settings(cfg)
    if rope.get("rope_type", "default") != "default":
        raise refuse(cfg, f"rope type {rope.get('rope_type')!r} is not supported for GPT-NeoX")
    d_head = cfg.hidden_size // cfg.num_attention_heads
    return {
        **_bert_style_dims(cfg),
        "use_attn_scale": True,
        "use_local_attn": False,
        "scale_attn_by_inverse_layer_idx": False,
        "parallel_attn_mlp": getattr(cfg, "use_parallel_residual", True),
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": round(tl_loading.get_rotary_pct_from_config(cfg) * d_head),
        # TransformerLens's branch leaves the base at its default 10000 (right for Pythia); read it.
        "rotary_base": tl_loading._get_rope_theta(cfg),
        "normalization_type": "LN",
        "default_prepend_bos": False,
    }


def _llama_config(cfg: Any) -> dict[str, Any]:
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise refuse(cfg, "attention or MLP biases are dropped by TransformerLens's Llama converter")
    rope = rope_settings(cfg)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise refuse(cfg, f"rope type {rope_type!r} is not supported (only default and llama3)")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise refuse(cfg, "partial rotary embeddings are not supported for Llama")
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    out: dict[str, Any] = {
        "d_model": cfg.hidden_size,
        "d_head": d_head,
        "n_heads": cfg.num_attention_heads,
        "d_mlp": cfg.intermediate_size,
        "n_layers": cfg.num_hidden_layers,
        "n_ctx": cfg.max_position_embeddings,
        "eps": cfg.rms_norm_eps,
        "d_vocab": cfg.vocab_size,
        "act_fn": act_fn(cfg, cfg.hidden_act),
        # TransformerLens switches to grouped-query attention whenever this is not None.
        "n_key_value_heads": n_kv if n_kv != cfg.num_attention_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": tl_loading._get_rope_theta(cfg),
        "final_rms": True,
        "gated_mlp": True,
    }
    if rope_type == "llama3":
        out.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=rope.get("original_max_position_embeddings", cfg.max_position_embeddings),
            NTK_by_parts_low_freq_factor=rope.get("low_freq_factor", 1.0),
            NTK_by_parts_high_freq_factor=rope.get("high_freq_factor", 4.0),
            NTK_by_parts_factor=rope.get("factor", 1.0),
        )
    return out


def _bert_config(cfg: Any) -> dict[str, Any]:
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise refuse(cfg, f"position_embedding_type={cfg.position_embedding_type!r} (only absolute)")
    if getattr(cfg, "is_decoder", False):
        raise refuse(cfg, "is_decoder=True (a causal BERT) is not supported")
    if cfg.type_vocab_size != 2:
        raise refuse(cfg, f"type_vocab_size={cfg.type_vocab_size} (HookedEncoder has exactly 2)")
    return {
        **_bert_style_dims(cfg),
        "attention_dir": "bidirectional",
    }


CORE_FAMILIES: tuple[Family, ...] = (
    Family(
        "gpt2",
        ("gpt2",),
        "GPT2LMHeadModel",
        "GPT2LMHeadModel",
        True,
        ("lm_head.",),
        _gpt2_config,
        convert_gpt2_weights,
    ),
    Family(
        "gpt-neox",
        ("gpt_neox",),
        "GPTNeoXForCausalLM",
        "GPTNeoXForCausalLM",
        True,
        ("embed_out.", "lm_head."),
        _neox_config,
        convert_neox_weights,
    ),
    Family(
        "llama",
        ("llama",),
        "LlamaForCausalLM",
        "LlamaForCausalLM",
        True,
        ("lm_head.",),
        _llama_config,
        convert_llama_weights,
    ),
    # convert_bert_weights reads the pooler, MLM and NSP heads, so BERT is loaded as
    # BertForPreTraining whatever head class saved it; the heads a directory lacks are freshly
    # initialised by transformers and flagged through head_prefixes.
    Family(
        "bert",
        ("bert",),
        "BertForPreTraining",
        "BertForMaskedLM",
        False,
        ("cls.predictions.",),
        _bert_config,
        convert_bert_weights,
        optional_prefixes=("cls.seq_relationship.", "bert.pooler."),
    ),
)


def tl_config_dict(
    family: Family, hf_config: Any, *, name: str, device: str, max_ctx: int | None = None
) -> dict[str, Any]:
    """HookedTransformerConfig keyword arguments for a loaded HF config.

    Args:
        family: from ``phasescope.models.hf_families.family_for_model_type``.
        hf_config: the transformers ``PretrainedConfig``.
        name: ``cfg.model_name`` (the directory's name).
        device: where the TransformerLens model will live.
        max_ctx: cap on n_ctx for causal families (default ``DEFAULT_MAX_CTX``); encoders keep theirs,
            because their learned position table must match n_ctx exactly.
    """
    try:
        cfg = family.config(hf_config)
    except AttributeError as exc:
        raise ModelLoadError(
            f"{name}: config.json lacks a field the {family.name} family needs ({exc})", model=name
        ) from exc
    if family.causal:
        cfg["n_ctx"] = min(cfg["n_ctx"], max_ctx or DEFAULT_MAX_CTX)
    cfg.update(
        model_name=name,
        original_architecture=family.tl_architecture,
        # None, not the path: HookedTransformer would otherwise load a tokenizer by name itself.
        tokenizer_name=None,
        init_weights=False,
        device=device,
        dtype=torch.float32,
    )
    return cfg
