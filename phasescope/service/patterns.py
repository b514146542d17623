"""Attention patterns kept for the dashboard: a small artefact per checkpoint, beside the tidy table.

The tidy results hold no patterns (they would dwarf everything else), so each job also keeps the
patterns of the first few prompts, truncated to ``MAX_SEQ`` tokens, as float16, in the results store
(whose paths, id check and atomic writes these functions use: ``ResultStore.pattern_file`` and
``pattern_tokens_file``)::

    <store>/<id>/patterns/<step:09d>.parquet   prompt, layer, head, seq, pattern (float16 bytes, [seq, seq])
    <store>/<id>/patterns/tokens.json          {"prompts": [[token string, ...], ...]} (same for every step)

Writing needs torch (the worker calls :func:`save_patterns`); reading does not, so the API serves
them with :func:`read_pattern` and :func:`pattern_index` without importing torch. Size: GPT-2 small,
3 prompts x 64 tokens is about 1.5 MB per checkpoint before compression.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phasescope.errors import InvalidRequest, NotFound
from phasescope.service.storage import atomic_write_bytes
from phasescope.service.store import ResultStore

__all__ = ["MAX_SEQ", "N_PROMPTS", "pattern_index", "read_pattern", "save_patterns"]

N_PROMPTS = 3  # prompts kept per checkpoint
MAX_SEQ = 64  # tokens kept per prompt
log = logging.getLogger("phasescope.service.patterns")


def _token_strings(loaded: Any, tokens: Any) -> list[list[str]]:
    tok = getattr(loaded, "tokenizer", None)
    rows = tokens.tolist()
    if tok is None:
        return [[str(t) for t in row] for row in rows]
    return [[tok.decode([t]) for t in row] for row in rows]


def save_patterns(store: ResultStore, aid: str, loaded: Any, batch: Any) -> Path | None:
    """Run the first prompts of ``batch`` through ``loaded`` and store their attention patterns.

    Args:
        store: the results store.
        aid: the analysis id.
        loaded: a ``phasescope.models.loading.LoadedModel`` at the checkpoint.
        batch: the analysis's ``phasescope.analysis.inputs.Batch``.

    Returns:
        The Parquet file written, or None when it failed: patterns are a visual aid, so a failure is
        logged and never fails the job.
    """
    try:
        import torch

        from phasescope.analysis.run import capture_attention

        tokens = batch.tokens[:N_PROMPTS, :MAX_SEQ]
        device = next(loaded.model.parameters()).device
        _, scores = capture_attention(loaded.model, tokens.to(device), want_logits=False)
        pats = (
            torch.softmax(scores.double(), dim=-1).to(torch.float16).cpu().numpy()
        )  # [layer batch head q k]
        n_layers, n_prompts, n_heads, seq, _ = pats.shape
        rows = {"prompt": [], "layer": [], "head": [], "seq": [], "pattern": []}
        for layer in range(n_layers):
            for prompt in range(n_prompts):
                for head in range(n_heads):
                    rows["prompt"].append(prompt)
                    rows["layer"].append(layer)
                    rows["head"].append(head)
                    rows["seq"].append(seq)
                    rows["pattern"].append(np.ascontiguousarray(pats[layer, prompt, head]).tobytes())
        frame = pd.DataFrame(rows).astype(
            {"prompt": "int16", "layer": "int16", "head": "int16", "seq": "int32"}
        )
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, compression="zstd")
        path = store.pattern_file(aid, int(loaded.step))
        atomic_write_bytes(path, buf.getvalue())
        tokens_path = store.pattern_tokens_file(aid)
        if not tokens_path.is_file():
            body = {"prompts": _token_strings(loaded, tokens.cpu())}
            atomic_write_bytes(tokens_path, json.dumps(body).encode())
        return path
    except Exception:  # a visual aid must never fail the measurement
        log.exception(
            "could not store attention patterns of %s at step %s", aid, getattr(loaded, "step", "?")
        )
        return None


def _steps(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.parquet")) if directory.is_dir() else []


def pattern_index(store: ResultStore, aid: str) -> dict[str, Any]:
    """Which patterns an analysis kept: checkpoints, layers, heads, prompts (empty lists when none)."""
    steps = _steps(store.patterns_dir(aid))
    body: dict[str, Any] = {"id": aid, "checkpoints": steps, "n_layers": 0, "n_heads": 0, "n_prompts": 0}
    if steps:
        frame = pd.read_parquet(store.pattern_file(aid, steps[0]), columns=["prompt", "layer", "head", "seq"])
        body.update(
            n_layers=int(frame["layer"].max()) + 1,
            n_heads=int(frame["head"].max()) + 1,
            n_prompts=int(frame["prompt"].max()) + 1,
            seq=int(frame["seq"].max()),
        )
    return body


def read_pattern(
    store: ResultStore, aid: str, checkpoint: int, layer: int, head: int, prompt: int
) -> dict[str, Any]:
    """One stored pattern with its tokens.

    Returns:
        ``{checkpoint, layer, head, prompt, tokens: [str], pattern: [[float]]}``, ``pattern[q][k]`` the
        attention of query ``q`` to key ``k``.

    Raises:
        NotFound: not an analysis id, or no patterns at that checkpoint (the error lists the
            checkpoints that have them).
        InvalidRequest: layer, head or prompt out of range (the error says the valid range).
    """
    path = store.pattern_file(aid, checkpoint)
    if not path.is_file():
        steps = _steps(store.patterns_dir(aid))
        raise NotFound(
            f"analysis {aid} kept no attention patterns at checkpoint {checkpoint}"
            + ("" if steps else " (it kept none at all: it ran before patterns were stored)"),
            field="checkpoint",
            choices=steps[:50],
        )
    frame = pd.read_parquet(path)
    for name, value in (("layer", layer), ("head", head), ("prompt", prompt)):
        top = int(frame[name].max())
        if not 0 <= value <= top:
            raise InvalidRequest(f"{name} {value} is out of range: choose 0…{top}", field=name)
    row = frame[(frame["layer"] == layer) & (frame["head"] == head) & (frame["prompt"] == prompt)].iloc[0]
    seq = int(row["seq"])
    matrix = np.frombuffer(row["pattern"], dtype=np.float16).reshape(seq, seq).astype(np.float64)
    tokens_path = store.pattern_tokens_file(aid)
    prompts = json.loads(tokens_path.read_text())["prompts"] if tokens_path.is_file() else []
    tokens = prompts[prompt][:seq] if prompt < len(prompts) else [str(i) for i in range(seq)]
    return {
        "id": aid,
        "checkpoint": checkpoint,
        "layer": layer,
        "head": head,
        "prompt": prompt,
        "tokens": tokens,
        "pattern": np.round(matrix, 5).tolist(),
    }
