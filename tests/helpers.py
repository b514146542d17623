"""Builders the tests share: tiny models, our series format, Hugging Face directories, a tokenizer.

Test files import from here (and from the helper modules for real processes,
``tests/integration/service.py``, ``tests/e2e/browser.py``, ``tests/hub_server.py``), never from
one another; conftest files hold only fixtures. Heavy libraries are imported inside the builders,
so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "HF_FAMILIES",
    "NULL_SERIES",
    "SMALL",
    "SPECIAL",
    "SPECIALS",
    "TEXTS",
    "TINY_SERIES_CONFIG",
    "VOCAB",
    "WORDS",
    "hf_bert",
    "hf_bert_mlm",
    "hf_gpt2",
    "hf_llama",
    "hf_neox",
    "rewrite_step",
    "save_hf_model",
    "tiny_model",
    "tiny_series",
    "word_tokenizer",
]


# --- TransformerLens models in memory and our checkpoint series on disk -------------------------


def tiny_model(dtype: torch.dtype | None = None, seed: int = 0, n_layers: int = 2) -> HookedTransformer:
    """A seeded attention-only HookedTransformer (d_model 16, 2 heads of 4, 8 positions, vocab 12).

    Args:
        dtype: its parameters' dtype (default float64, for identities that must hold to many digits).
    """
    import warnings

    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=16,
        n_heads=2,
        d_head=4,
        n_ctx=8,
        d_vocab=12,
        attn_only=True,
        normalization_type=None,
        seed=seed,
        dtype=torch.float64 if dtype is None else dtype,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3.9's own deprecations
        return HookedTransformer(cfg).eval()


# The architecture of tiny_series: 2 attention-only layers of 4 heads, LayerNorm, 32 positions.
TINY_SERIES_CONFIG: dict[str, Any] = dict(
    n_layers=2,
    d_model=32,
    n_heads=4,
    d_head=8,
    n_ctx=32,
    d_vocab=24,
    attn_only=True,
    act_fn="relu",
    normalization_type="LN",
    positional_embedding_type="standard",
)


# tiny_series as a null model: fresh random weights at every step, no LayerNorm, 40 tokens, 24
# positions (a loss near ln 40 at any step; numbers that tests of identities and dtypes rely on).
NULL_SERIES: dict[str, Any] = dict(
    weights="random", n_ctx=24, d_vocab=40, normalization_type=None, act_fn=None
)


def tiny_series(
    directory: Path,
    steps: Sequence[int] = (0, 10, 20, 30, 40),
    seed: int = 0,
    weights: Literal["drift", "random"] = "drift",
    **overrides: Any,
) -> list[int]:
    """Write a real HookedTransformer series in our checkpoint format (the tests' one series writer).

    With ``weights="drift"``, step ``steps[i]`` holds ``(1 - t) * init + t * target`` with
    ``t = i / (len(steps) - 1)`` and a random ``target`` (init + 0.5 N(0, 1) per parameter; buffers
    such as masks stay as they are): neighbouring checkpoints differ, and the last is far from init.
    With ``weights="random"`` every step is a fresh initialisation (seed ``seed + i``), the library's
    null model (``phasescope.models.series.write_random_series``): a loss near ln(d_vocab) anywhere.

    Args:
        directory: the series folder (created); under a model root it is the model string.
        steps: the training steps to label the checkpoints with.
        seed: torch seed of the initialisation and the target.
        weights: ``"drift"`` or ``"random"``, as above.
        overrides: ``HookedTransformerConfig`` fields replacing ``TINY_SERIES_CONFIG``'s.

    Returns:
        The steps written.
    """
    import warnings

    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from phasescope.models.series import (
        SeriesManifest,
        write_manifest,
        write_random_series,
        write_series_checkpoint,
    )

    config = {**TINY_SERIES_CONFIG, "seed": seed, **overrides}
    if weights == "random":
        del config["seed"]  # write_random_series seeds each step itself
        write_random_series(directory, config, [int(s) for s in steps], seed)
        return [int(s) for s in steps]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig(**config))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    params = {name for name, _ in model.named_parameters()}
    target = {k: start[k] + 0.5 * torch.randn_like(start[k]) for k in params}
    steps = [int(s) for s in steps]
    for i, step in enumerate(steps):
        t = i / max(1, len(steps) - 1)
        state = {k: (1 - t) * v + t * target[k] if k in params else v for k, v in start.items()}
        write_series_checkpoint(directory, step, state)
    write_manifest(directory, SeriesManifest(name=directory.name, config=config, seed=seed, steps=steps))
    return steps


def rewrite_step(series: Path, step: int) -> None:
    """Replace one step's weights by different values (same names, shapes and dtypes: same header)."""
    import torch
    from safetensors.torch import load_file

    from phasescope.models.series import checkpoint_filename, write_series_checkpoint

    state = load_file(str(series / checkpoint_filename(step)))
    torch.manual_seed(123)
    changed = {k: v + 0.3 * torch.randn_like(v) if ".W_" in k else v for k, v in state.items()}
    write_series_checkpoint(series, step, changed)


# --- Hugging Face model directories -------------------------------------------------------------

VOCAB = 100
# Special token ids inside the tiny vocabulary (transformers logs about out-of-vocab defaults).
SPECIAL = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
SMALL = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}


def hf_gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, **SPECIAL)
    return GPT2LMHeadModel(cfg)


def hf_neox() -> torch.nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    # rotary_pct 0.5, as Pythia's 0.25, so partial rotary embeddings are exercised.
    cfg = GPTNeoXConfig(**SMALL, vocab_size=VOCAB, max_position_embeddings=64, rotary_pct=0.5, **SPECIAL)
    return GPTNeoXForCausalLM(cfg)


def hf_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    # Two key-value heads for four query heads: grouped-query attention.
    cfg = LlamaConfig(**SMALL, num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, **SPECIAL)
    return LlamaForCausalLM(cfg)


def hf_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(**SMALL, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=2))


def hf_bert_mlm() -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(**SMALL, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=2))


HF_FAMILIES: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2": hf_gpt2,
    "gpt-neox": hf_neox,
    "llama": hf_llama,
    "bert": hf_bert,
    "bert-mlm": hf_bert_mlm,
}


def save_hf_model(build: Callable[[], torch.nn.Module], path: Path, seed: int = 0) -> torch.nn.Module:
    """Build a seeded random model with eager attention (so it can return its probabilities), save it."""
    import torch

    torch.manual_seed(seed)
    model = build()
    model.config._attn_implementation = "eager"
    model.eval()
    model.save_pretrained(path)
    return model


# --- A word-level tokenizer over VOCAB and texts in its words -----------------------------------

SPECIALS = ["<bos>", "<eos>", "<pad>", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIALS))]
# Texts of different lengths (5 to 40 words), so text boundaries fall anywhere in a window.
TEXTS = [" ".join(WORDS[(7 * t + 3 * i) % len(WORDS)] for i in range(5 + (11 * t) % 36)) for t in range(24)]


def word_tokenizer(encoder: bool) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``SPECIALS + WORDS`` (ids 0..VOCAB-1).

    Args:
        encoder: BERT-style ([CLS] ... [SEP], no BOS/EOS) when true, else a decoder's (BOS, EOS).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if encoder:
        special = dict(
            cls_token="[CLS]", sep_token="[SEP]", pad_token="<pad>", unk_token="[UNK]", mask_token="[MASK]"
        )
    else:
        special = dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="[UNK]")
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)
