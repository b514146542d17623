"""Text prompts framed the way each family expects, and the raw windows kept as an option.

Tiny random-init Hugging Face models (the builders of tests/helpers.py), saved with its word-level
tokenizer, loaded offline through ``phasescope.models.loading.load_model``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from phasescope.analysis.run import build_batch, measure_checkpoint
from phasescope.models.loading import LoadedModel, load_model
from phasescope.schemas import AnalysisRequest, InputSpec, analysis_id
from tests.helpers import (
    SMALL,
    SPECIAL,
    TEXTS,
    VOCAB,
    hf_bert_mlm,
    hf_gpt2,
    hf_neox,
    save_hf_model,
    tiny_series,
    word_tokenizer,
)


@pytest.fixture(autouse=True)
def _offline(no_network: None) -> None:
    """Every test here loads from disk only (the conftest's no_network fails any connection)."""


# Ids of the helpers' word_tokenizer specials (SPECIALS order).
BOS, EOS, CLS, SEP = 0, 1, 3, 4


def _qwen2() -> torch.nn.Module:
    cfg = Qwen2Config(**SMALL, num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, **SPECIAL)
    return Qwen2ForCausalLM(cfg)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One directory per family, under a model root: gpt2 (BOS), gpt-neox and qwen2 (no BOS), bert."""
    root = tmp_path_factory.mktemp("prompt-models")
    dirs = {}
    families = (
        ("gpt2", hf_gpt2, False),
        ("neox", hf_neox, False),
        ("qwen2", _qwen2, False),
        ("bert", hf_bert_mlm, True),
    )
    for name, build, encoder in families:
        save_hf_model(build, root / name)
        word_tokenizer(encoder).save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


@pytest.fixture()
def loaded(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> LoadedModel:
    from phasescope.config import get_settings

    monkeypatch.setenv("PHASESCOPE_MODEL_ROOTS", str(next(iter(model_dirs.values())).parent))
    get_settings.cache_clear()
    return load_model(str(model_dirs[request.param]))


def _old_windows(
    tokenizer: object, texts: list[str], n_prompts: int, seq_len: int, seed: int
) -> torch.Tensor:
    """build_batch's text prompts as they were before prompt styles: plain windows of one stream."""
    ids: list[int] = []
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for text in texts:
        if bos is not None:
            ids.append(int(bos))
        ids.extend(int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"])
    stream = torch.tensor(ids, dtype=torch.long)
    n_avail = len(ids) // seq_len
    if n_avail >= n_prompts:
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randperm(n_avail, generator=gen)[:n_prompts].sort().values * seq_len
    else:
        starts = torch.arange(n_avail) * seq_len
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def _is_stream_slice(row: torch.Tensor, stream: list[int]) -> bool:
    n = len(row)
    values = row.tolist()
    return any(stream[s : s + n] == values for s in range(len(stream) - n + 1))


def _stream(loaded: LoadedModel, separator: int | None) -> list[int]:
    ids: list[int] = []
    for text in TEXTS:
        ids += ([separator] if separator is not None else []) + loaded.tokenizer(
            text, add_special_tokens=False
        )["input_ids"]
    return ids


@pytest.mark.parametrize("loaded", ["gpt2", "neox", "bert"], indirect=True)
@pytest.mark.parametrize(("n_prompts", "seq_len", "seed"), [(6, 16, 0), (40, 24, 3), (3, 64, 1)])
def test_raw_prompts_are_the_old_windows_exactly(
    loaded: LoadedModel, n_prompts: int, seq_len: int, seed: int
) -> None:
    spec = InputSpec(texts=TEXTS, n_prompts=n_prompts, seq_len=seq_len, seed=seed, prompt_style="raw")
    batch = build_batch(loaded, spec)
    old = _old_windows(loaded.tokenizer, TEXTS, n_prompts, seq_len, seed)
    assert torch.equal(batch.tokens, old)
    # The raw windows do start mid-text without a BOS: what the family style fixes.
    if loaded.causal:
        assert (batch.tokens[:, 0] != BOS).any()


@pytest.mark.parametrize("loaded", ["gpt2"], indirect=True)
@pytest.mark.parametrize(("n_prompts", "seq_len", "seed"), [(6, 16, 0), (40, 24, 3), (3, 64, 1)])
def test_family_prompts_of_a_decoder_with_bos_start_with_bos(
    loaded: LoadedModel, n_prompts: int, seq_len: int, seed: int
) -> None:
    assert loaded.model.cfg.default_prepend_bos and loaded.tokenizer.bos_token_id == BOS
    batch = build_batch(loaded, InputSpec(texts=TEXTS, n_prompts=n_prompts, seq_len=seq_len, seed=seed))
    tokens = batch.tokens
    assert tokens.shape[1] == seq_len and 1 <= tokens.shape[0] <= n_prompts
    assert (tokens[:, 0] == BOS).all()
    # One BOS, not two, and the window never ends on a text separator.
    assert (tokens[:, 1] != BOS).all() and (tokens[:, -1] != BOS).all()
    stream = _stream(loaded, BOS)
    assert all(_is_stream_slice(row[1:], stream) for row in tokens)
    assert len({tuple(row.tolist()) for row in tokens}) == len(tokens)  # distinct windows
    assert not batch.target_mask[:, 0].any() and batch.target_mask[:, 1:].all()


@pytest.mark.parametrize("loaded", ["neox", "qwen2"], indirect=True)
def test_family_prompts_of_a_decoder_that_prepends_no_bos_are_text_windows(loaded: LoadedModel) -> None:
    # TransformerLens prepends no BOS for GPT-NeoX (Pythia) and Qwen2: its own config of the directory
    # says so, and the loaded model's config agrees.
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    assert convert_hf_model_config(str(loaded.ref.path))["default_prepend_bos"] is False
    assert loaded.model.cfg.default_prepend_bos is False and loaded.causal
    if loaded.family == "qwen2":
        # transformers 5 reads a word-level tokenizer saved next to a Qwen2 config as a Qwen2Tokenizer,
        # which drops every word; the framing comes from the model's config, so use the tokenizer itself.
        loaded = dataclasses.replace(loaded, tokenizer=word_tokenizer(encoder=False))
    batch = build_batch(loaded, InputSpec(texts=TEXTS, n_prompts=12, seq_len=16))
    tokens = batch.tokens
    assert tokens.shape == (12, 16)
    assert (tokens[:, 0] != BOS).all() and (tokens[:, -1] != BOS).all()
    stream = _stream(loaded, BOS)
    assert all(_is_stream_slice(row, stream) for row in tokens)


@pytest.mark.parametrize("loaded", ["bert"], indirect=True)
@pytest.mark.parametrize(("n_prompts", "seq_len", "seed"), [(6, 16, 0), (40, 24, 3), (3, 64, 1)])
def test_family_prompts_of_an_encoder_are_cls_text_sep(
    loaded: LoadedModel, n_prompts: int, seq_len: int, seed: int
) -> None:
    assert not loaded.causal
    batch = build_batch(loaded, InputSpec(texts=TEXTS, n_prompts=n_prompts, seq_len=seq_len, seed=seed))
    tokens = batch.tokens
    assert tokens.shape[1] == seq_len and 1 <= tokens.shape[0] <= n_prompts
    pad = loaded.tokenizer.pad_token_id
    for row in tokens:
        text = row[row != pad]
        assert len(text) == seq_len  # nothing is padded
        assert text[0] == CLS and text[-1] == SEP
        assert (text[1:] != CLS).all()
        assert text[1] != SEP and text[-2] != SEP  # no empty segment, no double [SEP]
    # Between [CLS] and the final [SEP]: a window of the texts joined by [SEP].
    stream = _stream(loaded, SEP)
    assert all(_is_stream_slice(row[1:-1], stream) for row in tokens)


@pytest.mark.parametrize("loaded", ["bert", "gpt2"], indirect=True)
def test_the_style_changes_what_the_heads_see_and_the_analysis_id(loaded: LoadedModel) -> None:
    family, raw = (InputSpec(texts=TEXTS, n_prompts=8, seq_len=16, prompt_style=s) for s in ("family", "raw"))
    ours = measure_checkpoint(loaded, ["entropy"], family)
    theirs = measure_checkpoint(loaded, ["entropy"], raw)
    assert ours["value"].notna().all() and theirs["value"].notna().all()
    assert not ours["value"].equals(theirs["value"])
    ids = {analysis_id(AnalysisRequest(model="tl:gpt2", inputs=spec)) for spec in (family, raw)}
    assert len(ids) == 2
    assert AnalysisRequest(model="zoo:induction-2l").inputs.prompt_style == "family"


def test_models_without_a_tokenizer_or_with_a_task_keep_their_prompts(isolated_data_dir: Path) -> None:
    series = isolated_data_dir / "models" / "tiny"
    tiny_series(series, steps=(0,))
    plain = load_model(str(series), 0)
    a, b = (build_batch(plain, InputSpec(n_prompts=4, seq_len=16, prompt_style=s)) for s in ("family", "raw"))
    assert torch.equal(a.tokens, b.tokens) and a.period == b.period == 8

    from phasescope.zoo import eval_batch
    from phasescope.zoo.tasks import INDUCTION

    task = {"name": INDUCTION, "vocab": 40, "eval_period": 6, "eval_size": 16, "eval_seed": 0}
    tasked = LoadedModel(plain.ref, 0, plain.model, task=task)
    expected = eval_batch(task, n=5, seed=None)
    for style in ("family", "raw"):
        got = build_batch(tasked, InputSpec(n_prompts=5, prompt_style=style))
        assert torch.equal(got.tokens, expected.tokens) and got.period == 6
