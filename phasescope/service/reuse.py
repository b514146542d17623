"""Measured work, reused: one stored table per checkpoint × measure × parameters × inputs × weights.

When a worker measures a checkpoint it also stores each measure's rows under a key that names
everything those rows depend on; when an analysis is submitted, a checkpoint whose every requested
measure has a key is assembled from them without a job, and otherwise its job computes only the
missing measures. So asking for one more measure, or more checkpoints, of a model already analysed
computes only what is missing.

Layout, beside the analyses in the results store (``Settings.store_dir``)::

    _cache/measures/<key>.parquet        one measure's rows at one checkpoint (float32 values)
    _cache/patterns/<key>.parquet        the attention-pattern artefact of that checkpoint and inputs
    _cache/patterns/<key>.tokens.json    its prompts' tokens

The key of a measure's rows is SHA-256 (24 hex digits) over: the model string, the step, the
checkpoint's weights identity (``phasescope.models.identity``), the measure's name, the request fields the
measure reads (its registry entry's ``params``), the whole ``inputs``, ``MEASURES_VERSION``, and any other top-level
request field (a loading choice such as a dtype). A checkpoint without a weights identity is never
cached. A cross-checkpoint measure's rows depend on other checkpoints too: its key also names the
steps and weights identities of the checkpoints it reads (``neighbours``: for ``trajectory`` the
previous two analysed steps and the first one), and it has no key, so is computed every time, when
any of them has no identity. Series measures (one table per analysis, not per checkpoint) are never
cached. Files are written atomically (temporary name + rename), so a reader sees a whole table or none.
Importing this module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from phasescope import MEASURES_VERSION
from phasescope.measures.registry import get_measure
from phasescope.measures.tables import concat_tables, empty_table
from phasescope.models.series import atomic_write_bytes
from phasescope.service.store import read_table, table_to_parquet_bytes

__all__ = ["CACHE_DIR", "MeasureCache", "measure_keys", "neighbour_identities", "patterns_key"]

CACHE_DIR = "_cache"
"""The cache's folder under the results store (not an analysis id, so ``ResultStore.list_ids`` skips it)."""

# Request fields that every key names explicitly; any other top-level field enters every key.
_NAMED_FIELDS = {"model", "checkpoints", "measures", "inputs", "params"}


def _key(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _common(request: dict[str, Any], step: int, identity: str) -> dict[str, Any]:
    return {
        "model": request["model"],
        "step": int(step),
        "weights": identity,
        "inputs": request.get("inputs") or {},
        "measures_version": MEASURES_VERSION,
        "other": {k: v for k, v in request.items() if k not in _NAMED_FIELDS},
    }


def neighbour_identities(record: dict[str, Any], step: int) -> dict[str, list[Any]]:
    """``role → [step, identity or None]`` of the checkpoints a cross-checkpoint measure of ``step`` reads.

    Args:
        record: the analysis's stored record (``steps`` and ``weights``, as ``ResultStore.load_request``).
        step: the checkpoint.
    """
    from phasescope.measures.builtin_trajectory import neighbour_steps

    weights = record.get("weights") or {}
    return {role: [s, weights.get(str(s))] for role, s in neighbour_steps(record["steps"], step).items()}


def measure_keys(
    request: dict[str, Any],
    step: int,
    identity: str,
    neighbours: dict[str, list[Any]] | None = None,
) -> dict[str, str]:
    """The cache key of each requested measure at one checkpoint (series measures have none).

    Args:
        request: the canonical request as stored (``AnalysisRequest.model_dump(mode="json")``).
        step: the checkpoint's training step.
        identity: its weights identity.
        neighbours: the checkpoints the cross-checkpoint measures read (``neighbour_identities``);
            without them, or with one lacking an identity, those measures get no key.
    """
    params = request.get("params") or {}
    common = _common(request, step, identity)
    keyed = neighbours is not None and all(ident for _, ident in neighbours.values())
    out = {}
    for m in request["measures"]:
        entry = get_measure(m)
        if entry.kind == "series" or (entry.kind == "cross-checkpoint" and not keyed):
            continue
        # Only the parameters the measure reads (phasescope.measures.registry, Measure.params) enter its
        # key, so changing the β grid does not invalidate the cached entropies.
        payload = {**common, "measure": m, "params": {p: params.get(p) for p in entry.params}}
        if entry.kind == "cross-checkpoint":
            payload["neighbours"] = neighbours
        out[m] = _key(payload)
    return out


def patterns_key(request: dict[str, Any], step: int, identity: str) -> str:
    """The key of a checkpoint's attention-pattern artefact (it depends on weights and inputs only)."""
    return _key({**_common(request, step, identity), "artefact": "patterns"})


class MeasureCache:
    """The stored measure tables under ``<store_dir>/_cache`` (see the module docstring)."""

    def __init__(self, store_root: Path) -> None:
        self.root = Path(store_root) / CACHE_DIR

    def _table_path(self, key: str) -> Path:
        assert len(key) == 24 and all(c in "0123456789abcdef" for c in key), key
        return self.root / "measures" / f"{key}.parquet"

    def has(self, keys: dict[str, str]) -> set[str]:
        """The measures whose key has a stored table."""
        return {m for m, k in keys.items() if self._table_path(k).is_file()}

    def read(self, keys: dict[str, str]) -> dict[str, pd.DataFrame]:
        """The stored tables of those measures that have one (values as float64)."""
        out = {}
        for measure, key in keys.items():
            try:
                out[measure] = read_table(self._table_path(key))
            except FileNotFoundError:
                continue  # removed since has(): the caller computes it
        return out

    def write(self, keys: dict[str, str], table: pd.DataFrame) -> None:
        """Store each measure's rows of ``table`` under its key; a measure without rows is stored empty.

        Args:
            keys: key per measure that was computed (its rows are in ``table``).
            table: the tidy table of those measures at one checkpoint.
        """
        groups = dict(iter(table.groupby("measure", observed=True, sort=False))) if len(table) else {}
        for measure, key in keys.items():
            rows = groups.get(measure)
            rows = empty_table() if rows is None else rows.reset_index(drop=True)
            atomic_write_bytes(self._table_path(key), table_to_parquet_bytes(rows))

    def assemble(self, keys: dict[str, str]) -> pd.DataFrame | None:
        """One checkpoint's table from the stored measures, or None when any is missing."""
        tables = self.read(keys)
        if set(tables) != set(keys):
            return None
        return concat_tables([tables[m] for m in sorted(tables)])

    def save_patterns(self, key: str, patterns_file: Path, tokens_file: Path) -> None:
        """Keep a copy of a checkpoint's pattern artefact (written by ``phasescope.service.patterns``)."""
        directory = self.root / "patterns"
        if patterns_file.is_file():
            atomic_write_bytes(directory / f"{key}.parquet", patterns_file.read_bytes())
        if tokens_file.is_file():
            atomic_write_bytes(directory / f"{key}.tokens.json", tokens_file.read_bytes())

    def restore_patterns(self, key: str, patterns_file: Path, tokens_file: Path) -> bool:
        """Copy a kept pattern artefact into an analysis; False when none was kept."""
        source = self.root / "patterns" / f"{key}.parquet"
        if not source.is_file():
            return False
        atomic_write_bytes(patterns_file, source.read_bytes())
        tokens = self.root / "patterns" / f"{key}.tokens.json"
        if tokens.is_file() and not tokens_file.is_file():
            atomic_write_bytes(tokens_file, tokens.read_bytes())
        return True

    def clear(self) -> None:
        """Forget everything (the analyses keep their own results)."""
        shutil.rmtree(self.root, ignore_errors=True)
