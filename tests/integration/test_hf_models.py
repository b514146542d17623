"""Loading Hugging Face models into TransformerLens: tiny random models of each family, saved to disk.

Every test runs with the network blocked: nothing here may reach the Hugging Face hub.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    PreTrainedTokenizerFast,
)

from phasescope.errors import CheckpointNotFound, ModelLoadError, ModelNotFound
from phasescope.models.hf import (
    FINAL_STEP,
    attention_hook_names,
    hf_trainer_checkpoint_dir,
    hf_trainer_steps,
    is_hf_model_dir,
    is_hf_trainer_series,
    known_tl_models,
    load_hf_directory,
    load_hf_trainer_checkpoint,
    load_tl_pretrained,
    resolve_tl_name,
    tl_checkpoint_steps,
)
from tests.helpers import (
    HF_FAMILIES,
    SMALL,
    SPECIAL,
    VOCAB,
    hf_gpt2,
    hf_neox,
    save_hf_model,
)

SEQ = 12


@pytest.fixture(autouse=True)
def _offline(no_network: None) -> None:
    """Every test here loads from disk only (the conftest's no_network fails any connection)."""


def _tokens(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (2, SEQ), generator=gen)  # (batch, pos)


def _entropy_from_scores(scores: torch.Tensor) -> torch.Tensor:
    # -sum p ln p over keys in float64; masked keys (-inf) have p = 0 and contribute nothing.
    logp = torch.log_softmax(scores.double(), dim=-1)
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def _entropy_from_probs(p: torch.Tensor) -> torch.Tensor:
    p = p.double()
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


@pytest.mark.parametrize("family", list(HF_FAMILIES))
def test_scores_patterns_and_logits_match_the_hf_model(family: str, tmp_path: Path) -> None:
    hf = save_hf_model(HF_FAMILIES[family], tmp_path / family)
    assert is_hf_model_dir(tmp_path / family)
    loaded = load_hf_directory(tmp_path / family, "cpu")
    tokens = _tokens()

    with torch.no_grad():
        hf_out = hf(tokens, output_attentions=True)
        logits, cache = loaded.model.run_with_cache(tokens)

    encoder = family.startswith("bert")
    assert loaded.causal is not encoder
    assert loaded.family == family.removesuffix("-mlm")
    assert loaded.has_lm_head is (family != "bert")  # a bare BertModel has no MLM head

    # (1) the numbers are the model's own: logits, or the final hidden states of a headless encoder.
    if family == "bert":
        with torch.no_grad():
            ours, theirs = loaded.model.encoder_output(tokens), hf_out.last_hidden_state
    else:
        ours, theirs = logits, hf_out.logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    scores_names, pattern_names = attention_hook_names(loaded.model)
    assert len(scores_names) == len(pattern_names) == 2
    masked = torch.ones(SEQ, SEQ).triu(1).bool()  # (query, key): keys after the query
    for layer, (s_name, p_name) in enumerate(zip(scores_names, pattern_names, strict=True)):
        scores, pattern = cache[s_name], cache[p_name]  # (batch, head, query, key)
        assert scores.shape == pattern.shape == (2, 4, SEQ, SEQ)
        # (2) true pre-softmax scores: their softmax is the pattern, and they are not the pattern.
        torch.testing.assert_close(scores.softmax(-1), pattern, atol=1e-6, rtol=0)
        finite = torch.isfinite(scores)
        assert not torch.allclose(scores[finite], pattern[finite], atol=1e-3)
        if encoder:
            assert finite.all()
        else:
            assert torch.isneginf(scores[..., masked]).all()
            assert finite[..., ~masked].all()
            assert not pattern.isnan().any()
        # (3) entropy from our scores == entropy of HF's own attention probabilities.
        torch.testing.assert_close(
            _entropy_from_scores(scores),
            _entropy_from_probs(hf_out.attentions[layer]),
            atol=1e-5,
            rtol=0,
        )


def test_local_tokenizer_is_loaded_offline(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(VOCAB - 3)]
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    save_hf_model(hf_gpt2, tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")

    loaded = load_hf_directory(tmp_path / "m", "cpu")
    assert loaded.tokenizer is not None
    assert loaded.tokenizer("w0 w5")["input_ids"][-2:] == [3, 8]
    assert loaded.model.tokenizer is not None

    save_hf_model(hf_gpt2, tmp_path / "bare")
    assert load_hf_directory(tmp_path / "bare", "cpu").tokenizer is None


def test_trainer_series_lists_steps_from_names_and_loads_each(tmp_path: Path) -> None:
    series = tmp_path / "run"
    save_hf_model(hf_neox, series / "checkpoint-20", seed=2)
    save_hf_model(hf_neox, series / "checkpoint-10", seed=1)
    (series / "checkpoint-30").mkdir()  # an interrupted save: no weights, not a step
    (series / "runs").mkdir()
    (series / "trainer_state.json").write_text("{}")

    assert is_hf_trainer_series(series)
    assert not is_hf_trainer_series(series / "checkpoint-10")
    assert hf_trainer_steps(series) == [10, 20]

    w10 = load_hf_trainer_checkpoint(series, 10, "cpu").model.W_Q
    w20 = load_hf_trainer_checkpoint(series, 20, "cpu").model.W_Q
    assert not torch.allclose(w10, w20)

    with pytest.raises(CheckpointNotFound) as info:
        hf_trainer_checkpoint_dir(series, 15)
    assert info.value.choices == [10, 20]


def test_listing_a_series_reads_no_weights(tmp_path: Path) -> None:
    # Unloadable weight files: listing must still succeed, because it looks at names only.
    for step in (5, 500):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "config.json").write_text('{"model_type": "gpt2"}')
        (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    assert hf_trainer_steps(tmp_path) == [5, 500]


def test_tl_checkpoints_are_listed_without_network() -> None:
    steps = tl_checkpoint_steps("pythia-70m")
    assert len(steps) == 154
    assert steps[:4] == [0, 1, 2, 4] and steps[-1] == 143000
    assert steps == sorted(steps)
    assert tl_checkpoint_steps("gpt2") == []
    known = known_tl_models()
    assert "gpt2" in known and "EleutherAI/pythia-70m" in known
    # Aliases too (the short names people type after tl:), listed after the official names.
    assert known.index("pythia-70m") > known.index("EleutherAI/pythia-70m")
    assert len(known) == len(set(known))
    assert resolve_tl_name("pythia-70m") == "EleutherAI/pythia-70m"


def test_the_tl_catalog_is_what_the_installed_transformer_lens_knows() -> None:
    from phasescope.models import tl_catalog

    live = tl_catalog.build_catalog()
    stored = tl_catalog.catalog()
    assert stored == live, (
        "phasescope/models/data/tl_catalog.json is stale: run python -m phasescope.models.tl_catalog --write"
    )
    assert len(stored["official"]) > 100 and stored["checkpoints"]["EleutherAI/pythia-70m"]


def test_models_transformer_lens_would_run_repository_code_for_are_refused() -> None:
    import transformer_lens.loading_from_pretrained as tl_loading

    from phasescope.config import Settings
    from phasescope.models import tl_catalog
    from phasescope.models.loading import parse_model_spec

    # Our copy (read by the torch-free API) is TransformerLens's own list.
    assert tl_catalog.REMOTE_CODE_PREFIXES == tuple(tl_loading.NEED_REMOTE_CODE_MODELS)
    names = [n for n in tl_catalog.official_names() if n.startswith(tl_catalog.REMOTE_CODE_PREFIXES)]
    assert names, "TransformerLens lists no model it loads with remote code"
    with pytest.raises(ModelLoadError, match="trust_remote_code") as info:
        parse_model_spec(f"tl:{names[0]}", Settings())
    assert f"hub:{names[0]}" in str(info.value)  # the way that runs no repository code
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_tl_pretrained(names[0], None, "cpu")  # refused before any download
    assert parse_model_spec(f"tl:{names[0]}", Settings(allow_remote_code=True)).kind == "tl"
    assert parse_model_spec("tl:gpt2", Settings()).kind == "tl"


def test_tl_requests_are_validated_before_any_download() -> None:
    with pytest.raises(ModelNotFound) as info:
        tl_checkpoint_steps("pythia-70q")
    assert "pythia-70m" in str(info.value)
    with pytest.raises(CheckpointNotFound) as ckpt:
        load_tl_pretrained("pythia-70m", 7, "cpu")
    assert ckpt.value.choices is not None and 8 in ckpt.value.choices
    with pytest.raises(CheckpointNotFound) as final:
        load_tl_pretrained("gpt2", 100, "cpu")
    assert final.value.choices == [FINAL_STEP]
    with pytest.raises(ModelLoadError, match="encoder-decoder"):
        load_tl_pretrained("t5-small", None, "cpu")


def test_unsupported_architecture_names_the_supported_families(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = OlmoeConfig(**SMALL, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, vocab_size=VOCAB)
    OlmoeForCausalLM(cfg).save_pretrained(tmp_path / "olmoe")
    with pytest.raises(ModelLoadError) as info:
        load_hf_directory(tmp_path / "olmoe", "cpu")
    message = str(info.value)
    assert "'olmoe'" in message and "mixture-of-experts" in message  # the family, and why
    for family in ("gpt2", "gpt-neox", "llama", "bert", "opt", "qwen2", "olmo3", "bloom"):
        assert family in message
    assert info.value.choices is not None and info.value.choices[:4] == ["gpt2", "gpt-neox", "llama", "bert"]


def test_variants_transformerlens_would_compute_differently_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(**SMALL, vocab_size=VOCAB, attention_bias=True, **SPECIAL)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "biased")
    with pytest.raises(ModelLoadError, match="biases"):
        load_hf_directory(tmp_path / "biased", "cpu")

    (tmp_path / "empty").mkdir()
    assert not is_hf_model_dir(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="not a Hugging Face model directory"):
        load_hf_directory(tmp_path / "empty", "cpu")


def test_missing_attention_weights_are_refused_not_randomly_initialised(tmp_path: Path) -> None:
    save_hf_model(hf_gpt2, tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["transformer.h.0.attn.c_attn.weight"]
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="c_attn"):
        load_hf_directory(tmp_path / "m", "cpu")


def test_recognising_and_listing_directories_does_not_import_torch(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "config.json").write_text("{}")
    (tmp_path / "checkpoint-3" / "model.safetensors").write_bytes(b"")
    code = (
        "import sys; from phasescope.models import hf as h; "
        f"assert h.hf_trainer_steps({str(tmp_path)!r}) == [3]; "
        f"assert h.is_hf_model_dir({str(tmp_path / 'checkpoint-3')!r}); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
