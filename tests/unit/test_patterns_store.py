"""The attention-pattern artefact lives in the results store, under the store's own paths and id check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phasescope.analysis.run import build_batch
from phasescope.errors import InvalidRequest, NotFound
from phasescope.models.loading import load_model
from phasescope.schemas import InputSpec
from phasescope.service.patterns import MAX_SEQ, N_PROMPTS, pattern_index, read_pattern, save_patterns
from phasescope.service.store import ResultStore
from tests.helpers import TINY_SERIES_CONFIG, tiny_series

AID = "0123456789abcdef01234567"


def test_patterns_round_trip_through_the_store(isolated_data_dir: Path) -> None:
    series = isolated_data_dir / "models" / "tiny"
    tiny_series(series, steps=(0, 10))
    loaded = load_model(str(series), 10)
    batch = build_batch(loaded, InputSpec(n_prompts=4, seed=1))
    store = ResultStore(isolated_data_dir / "results")

    path = save_patterns(store, AID, loaded, batch)
    assert path == store.pattern_file(AID, 10) == store.root / AID / "patterns" / "000000010.parquet"
    assert store.pattern_tokens_file(AID).is_file()
    index = pattern_index(store, AID)
    layers, heads = TINY_SERIES_CONFIG["n_layers"], TINY_SERIES_CONFIG["n_heads"]
    seq = min(MAX_SEQ, batch.tokens.shape[1])
    assert index == {
        "id": AID,
        "checkpoints": [10],
        "n_layers": layers,
        "n_heads": heads,
        "n_prompts": min(N_PROMPTS, batch.tokens.shape[0]),
        "seq": seq,
    }

    one = read_pattern(store, AID, 10, layers - 1, heads - 1, 0)
    pattern = torch.tensor(one["pattern"], dtype=torch.float64)
    assert pattern.shape == (seq, seq) and len(one["tokens"]) == seq
    # A softmax over the causal keys: rows sum to one (float16 storage, 5 decimals), nothing above the diagonal.
    assert torch.allclose(pattern.sum(-1), torch.ones(seq, dtype=torch.float64), atol=2e-2)
    assert (pattern.triu(1) == 0).all()

    with pytest.raises(NotFound, match="no attention patterns at checkpoint 0") as missing:
        read_pattern(store, AID, 0, 0, 0, 0)
    assert missing.value.choices == [10]
    with pytest.raises(InvalidRequest, match=f"head {heads} is out of range"):
        read_pattern(store, AID, 10, 0, heads, 0)


@pytest.mark.parametrize("bad", ["../../etc", "0123", "G" * 24])
def test_patterns_refuse_what_is_not_an_analysis_id(tmp_path: Path, bad: str) -> None:
    """The store's id check guards the pattern paths too: no path outside the store is formed."""
    store = ResultStore(tmp_path)
    with pytest.raises(NotFound, match="is not an analysis id"):
        pattern_index(store, bad)
    with pytest.raises(NotFound, match="is not an analysis id"):
        read_pattern(store, bad, 0, 0, 0, 0)
    assert not any(tmp_path.iterdir())
