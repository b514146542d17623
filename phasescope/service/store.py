"""The results store: the source of truth for finished analyses, outliving Redis.

Layout under ``Settings.store_dir`` (one folder per analysis id)::

    <id>/request.json          the canonical request (what the id hashes)
    <id>/parts/<step>.parquet  one tidy table per finished job (checkpoint), written by workers, with
                               that job's record (seconds spent, worker, finished_at) in the Parquet
                               key-value metadata under ``phasescope.part``: one file, one rename
    <id>/parts/<step>.json     that record in stores written before the record moved into the part
    <id>/parts/series.parquet  the series job's part (measures of kind "series", once per analysis)
    <id>/cancelled.json        present while the analysis is cancelled (DELETE); a new POST clears it
    <id>/results.parquet       all parts merged, written once every job has finished
    <id>/summary.json          per-checkpoint digest, timings, status
    <id>/patterns/<step>.parquet  the attention patterns kept for the dashboard (phasescope.service.patterns)
    <id>/patterns/tokens.json     their prompts' tokens

Every file is written to a temporary name, flushed to the disk and renamed (phasescope.service.storage), so
a failed or killed job, or a power loss, never leaves a half-written result; a part and its record
appear together or not at all. Values are stored as float32 (computed in float64), and so are the
uncertainty columns ``se``, ``ci_lo``, ``ci_hi`` (docs/measures.md), which every stored table carries
(NaN on rows without one); a table stored before they existed reads back with them as NaN.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phasescope.errors import NotFound
from phasescope.measures.tables import UNCERTAINTY_COLUMNS, concat_tables
from phasescope.schemas import ANALYSIS_ID_PATTERN, AnalysisRequest
from phasescope.service.storage import atomic_write_bytes

__all__ = [
    "PART_META_KEY",
    "PROMPT_SUFFIX",
    "ResultStore",
    "SERIES_PART",
    "read_table",
    "table_to_parquet_bytes",
    "with_uncertainty",
    "write_local_result",
]

_ID = re.compile(ANALYSIS_ID_PATTERN)
# The Parquet key-value metadata entry that holds a part's job record (JSON).
PART_META_KEY = b"phasescope.part"
# The part of an analysis's series job (the measures of kind "series"), beside the checkpoints' parts.
SERIES_PART = "series"
# Per-prompt quantities end with this (``loss_prompt``, ``induction_score_prompt``): the bulk of a
# table's order-parameter rows, which most readers (the dashboard's default views) do not need.
PROMPT_SUFFIX = "_prompt"


def with_uncertainty(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the uncertainty columns ``se``, ``ci_lo``, ``ci_hi`` as float32, NaN where absent.

    A table written before these columns existed (or by a measure that reports none) gets them as
    NaN: "no uncertainty", never an error. float32 is how they are stored; in memory it halves what
    a 26M-row table spends on them (0.3 GB instead of 0.6 GB).
    """
    missing = [c for c in UNCERTAINTY_COLUMNS if c not in frame.columns]
    cast = [c for c in UNCERTAINTY_COLUMNS if c in frame.columns and frame[c].dtype != np.float32]
    if not missing and not cast:
        return frame
    frame = (
        frame.copy()
        if not missing
        else frame.assign(**{c: np.full(len(frame), np.nan, dtype=np.float32) for c in missing})
    )
    for column in cast:
        frame[column] = frame[column].astype("float32")
    return frame


def table_to_parquet_bytes(table: pd.DataFrame, metadata: dict[bytes, bytes] | None = None) -> bytes:
    """Serialise a tidy table to Parquet with float32 values.

    Args:
        metadata: extra key-value entries for the file's footer (beside pandas' own).
    """
    frame = with_uncertainty(table).assign(value=lambda f: f["value"].astype("float32"))
    buf = io.BytesIO()
    if not metadata:
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    import pyarrow as pa
    import pyarrow.parquet as pq

    # What DataFrame.to_parquet(index=False) writes, plus our entries in the same footer.
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **metadata})
    pq.write_table(arrow, buf, compression="snappy")
    return buf.getvalue()


def _footer_record(path: Path) -> dict[str, Any] | None:
    """The job record in a part's Parquet footer (None for a part written before records moved there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        raw = (pq.read_schema(path).metadata or {}).get(PART_META_KEY)
    except (OSError, pa.ArrowException):
        return None
    return json.loads(raw) if raw else None


def read_table(path: Path) -> pd.DataFrame:
    """Read a stored tidy table back: values as float64, ``se``/``ci_lo``/``ci_hi`` as float32 (NaN
    in a table stored before they existed)."""
    frame = pd.read_parquet(path)
    frame["value"] = frame["value"].astype("float64")
    return with_uncertainty(concat_tables([frame]) if len(frame) else frame)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def write_local_result(
    out: Path,
    aid: str,
    request: AnalysisRequest,
    table: pd.DataFrame,
    digest: pd.DataFrame,
    timings: dict[int, float],
    wall_s: float,
    findings: dict[str, Any] | None = None,
) -> None:
    """What ``phasescope analyze --out`` writes: results.parquet, request.json, summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.parquet", table_to_parquet_bytes(table))
    atomic_write_bytes(out / "request.json", _json_bytes({"id": aid, **request.canonical()}))
    summary = {
        "id": aid,
        "model": request.model,
        "checkpoints": sorted(timings),
        "measures": request.measures,
        "rows": len(table),
        "wall_seconds": round(wall_s, 3),
        "seconds_per_checkpoint": {str(k): round(v, 4) for k, v in timings.items()},
        "digest": json.loads(digest.to_json(orient="index")),
        "findings": findings or {},
    }
    atomic_write_bytes(out / "summary.json", _json_bytes(summary))


_LABEL_COLUMNS = ("measure", "quantity", "matrix")


def _gather(table: pd.DataFrame, labels: dict[str, pd.Categorical], rows: np.ndarray) -> pd.DataFrame:
    """``table.iloc[rows]``, with the label columns taken from their categories (same dtypes)."""
    rest = [c for c in table.columns if c not in labels]
    out = table[rest].iloc[rows]
    for column, categorical in labels.items():
        out[column] = categorical.take(rows).astype(table[column].dtype)
    return out[list(table.columns)]


def _row_spans(table: pd.DataFrame) -> dict[tuple[str, str, int], list[tuple[int, int]]]:
    """(measure, quantity, checkpoint) → the ``[start, stop)`` row spans holding it, in table order.

    Each job writes its checkpoint's table one quantity after another, so every key is one span in
    a merged table: the index is a few thousand spans even for 26M rows, and a lookup returns a slice.
    """
    if not len(table):
        return {}
    codes = [pd.factorize(table[c])[0] for c in ("measure", "quantity", "checkpoint")]
    change = np.zeros(len(table), dtype=bool)
    change[0] = True
    for code in codes:
        change[1:] |= code[1:] != code[:-1]
    starts = np.flatnonzero(change)
    stops = np.append(starts[1:], len(table))
    keys = zip(
        table["measure"].to_numpy()[starts],
        table["quantity"].to_numpy()[starts],
        table["checkpoint"].to_numpy()[starts],
        strict=True,
    )
    spans: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    for (m, q, c), a, b in zip(keys, starts.tolist(), stops.tolist(), strict=True):
        spans.setdefault((str(m), str(q), int(c)), []).append((a, b))
    return spans


class ResultStore:
    """Finished results and canonical requests on disk, keyed by analysis id."""

    # Finished tables kept in memory by the API process (the dashboard asks for one analysis many
    # times over): parsing Parquet is most of a filtered GET's time. Keyed by the file's identity, so
    # a rewritten or deleted result is never served from here. Bounded by count and by rows (a row
    # is about 100 bytes in memory); a larger table is read each time. A Pythia-160m sweep of the
    # default measures (154 checkpoints × 144 heads, 61 β) is 26M rows, ~2.6 GB: it must fit, or
    # every request of its dashboard re-reads a 150 MB file (seconds).
    CACHED_TABLES = 8
    CACHED_ROWS = 32_000_000

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tables: OrderedDict[tuple, tuple[pd.DataFrame, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def _dir(self, aid: str) -> Path:
        # The id is used as a path component: accept only what analysis_id produces.
        if not _ID.match(aid):
            raise NotFound(f"{aid!r} is not an analysis id (24 hex digits)", field="id")
        return self.root / aid

    def patterns_dir(self, aid: str) -> Path:
        """``<id>/patterns``: the attention patterns kept for the dashboard (``phasescope.service.patterns``).

        Raises:
            NotFound: ``aid`` is not an analysis id.
        """
        return self._dir(aid) / "patterns"

    def pattern_file(self, aid: str, step: int) -> Path:
        """``<id>/patterns/<step:09d>.parquet``: the patterns kept at one checkpoint."""
        return self.patterns_dir(aid) / f"{step:09d}.parquet"

    def pattern_tokens_file(self, aid: str) -> Path:
        """``<id>/patterns/tokens.json``: the kept prompts' tokens (the same at every checkpoint)."""
        return self.patterns_dir(aid) / "tokens.json"

    def save_request(self, aid: str, request: AnalysisRequest, extra: dict[str, Any] | None = None) -> None:
        """Record the canonical request (idempotent)."""
        body = {"id": aid, **request.canonical(), **(extra or {})}
        atomic_write_bytes(self._dir(aid) / "request.json", _json_bytes(body))

    def load_request(self, aid: str) -> dict[str, Any]:
        path = self._dir(aid) / "request.json"
        if not path.is_file():
            raise NotFound(f"no analysis {aid}", field="id")
        return json.loads(path.read_text())

    def has_request(self, aid: str) -> bool:
        return (self._dir(aid) / "request.json").is_file()

    def write_part(
        self, aid: str, step: int, table: pd.DataFrame, meta: dict[str, Any] | None = None
    ) -> Path:
        """Store one job's table and its record (``meta``: seconds, worker, ...) in one atomic write.

        The record travels in the Parquet file's footer, so a part and its record become visible
        together, with one rename, or not at all.
        """
        path = self._dir(aid) / "parts" / f"{step:09d}.parquet"
        record = json.dumps(meta or {}, sort_keys=True, default=str).encode()
        atomic_write_bytes(path, table_to_parquet_bytes(table, {PART_META_KEY: record}))
        return path

    def part_meta(self, aid: str) -> dict[int, dict[str, Any]]:
        """The job record of every stored part, by step: the same steps as ``part_steps``.

        A part from an older store keeps its record in ``<step>.json`` beside it (``{}`` if none).
        """
        parts = self._dir(aid) / "parts"
        if not parts.is_dir():
            return {}
        out: dict[int, dict[str, Any]] = {}
        for path in sorted(parts.glob("*.parquet")):
            if not path.stem.isdigit():  # the series part (SERIES_PART) is no checkpoint's
                continue
            record = _footer_record(path)
            if record is None:
                legacy = path.with_suffix(".json")
                record = json.loads(legacy.read_text()) if legacy.is_file() else {}
            out[int(path.stem)] = record
        return out

    def set_cancelled(self, aid: str, cancelled: bool) -> None:
        """Mark (or unmark) an analysis as cancelled, so nothing resumes it behind the user's back."""
        path = self._dir(aid) / "cancelled.json"
        if cancelled:
            atomic_write_bytes(path, _json_bytes({"cancelled": True}))
        else:
            path.unlink(missing_ok=True)

    def is_cancelled(self, aid: str) -> bool:
        return (self._dir(aid) / "cancelled.json").is_file()

    def part_steps(self, aid: str) -> list[int]:
        parts = self._dir(aid) / "parts"
        if not parts.is_dir():
            return []
        return sorted(int(p.stem) for p in parts.glob("*.parquet") if p.stem.isdigit())

    def write_series_part(self, aid: str, table: pd.DataFrame, meta: dict[str, Any] | None = None) -> Path:
        """Store the series job's table (the series measures of the whole analysis) and its record.

        ``<id>/parts/series.parquet``: merged with the checkpoints' parts by ``finalize``, never counted
        as a checkpoint by ``part_steps``; written atomically like every part.
        """
        path = self._dir(aid) / "parts" / f"{SERIES_PART}.parquet"
        record = json.dumps(meta or {}, sort_keys=True, default=str).encode()
        atomic_write_bytes(path, table_to_parquet_bytes(table, {PART_META_KEY: record}))
        return path

    def has_series_part(self, aid: str) -> bool:
        """Whether the series job's part is stored (``write_series_part``)."""
        return (self._dir(aid) / "parts" / f"{SERIES_PART}.parquet").is_file()

    def finalize(self, aid: str, summary: dict[str, Any]) -> pd.DataFrame:
        """Merge the parts into results.parquet and write the summary; returns the merged table."""
        d = self._dir(aid)
        table = concat_tables([read_table(p) for p in sorted((d / "parts").glob("*.parquet"))])
        atomic_write_bytes(d / "results.parquet", table_to_parquet_bytes(table))
        atomic_write_bytes(d / "summary.json", _json_bytes(summary))
        return table

    def is_finished(self, aid: str) -> bool:
        d = self._dir(aid)
        return (d / "results.parquet").is_file() and (d / "summary.json").is_file()

    def summary(self, aid: str) -> dict[str, Any]:
        path = self._dir(aid) / "summary.json"
        if not path.is_file():
            raise NotFound(f"analysis {aid} has no finished result", field="id")
        return json.loads(path.read_text())

    def results_path(self, aid: str) -> Path | None:
        """The merged Parquet file of a finished analysis (float32 values), or None before it exists."""
        path = self._dir(aid) / "results.parquet"
        return path if path.is_file() else None

    def results(
        self,
        aid: str,
        measure: str | None = None,
        quantity: str | None = None,
        checkpoint: int | None = None,
        prompts: bool = True,
    ) -> pd.DataFrame:
        """The merged table of a finished analysis, or whatever parts exist so far.

        ``measure`` / ``quantity`` / ``checkpoint`` keep only those rows; on a finished table this is a
        lookup in an index built once (the dashboard asks for one quantity, or one measure at one
        checkpoint, many times over). ``prompts=False`` leaves out the per-prompt rows (quantities
        ending ``_prompt``) unless ``quantity`` names one. A finished table may be shared with other
        callers (it is cached): do not modify it in place.
        """
        d = self._dir(aid)
        try:
            stat = (d / "results.parquet").stat()
        except FileNotFoundError:
            stat = None
        if stat is None:
            parts = sorted((d / "parts").glob("*.parquet")) if (d / "parts").is_dir() else []
            if not parts and not self.has_request(aid):
                raise NotFound(f"no analysis {aid}", field="id")
            table = with_uncertainty(concat_tables([read_table(p) for p in parts]))
            for column, value in (("measure", measure), ("quantity", quantity), ("checkpoint", checkpoint)):
                if value is not None and len(table):
                    table = table[table[column] == value]
            if not prompts and quantity is None and len(table):
                table = table[~table["quantity"].str.endswith(PROMPT_SUFFIX)]
            return table
        table, groups, labels = self._finished(
            (aid, stat.st_ino, stat.st_mtime_ns, stat.st_size), d / "results.parquet"
        )
        skip_prompts = not prompts and quantity is None
        if measure is None and quantity is None and checkpoint is None and not skip_prompts:
            return table
        spans = sorted(
            span
            for (m, q, c), runs in groups.items()
            if (measure is None or m == measure)
            and (quantity is None or q == quantity)
            and (checkpoint is None or c == checkpoint)
            and not (skip_prompts and q.endswith(PROMPT_SUFFIX))
            for span in runs
        )
        if not spans:
            return table.iloc[:0]
        if len(spans) == 1:  # one block of rows: a slice, no gather
            return table.iloc[spans[0][0] : spans[0][1]]
        return _gather(table, labels, np.concatenate([np.arange(a, b) for a, b in spans]))

    def _finished(
        self, key: tuple, path: Path
    ) -> tuple[pd.DataFrame, dict[tuple[str, str, int], list[tuple[int, int]]], dict[str, pd.Categorical]]:
        """A finished table, its (measure, quantity, checkpoint) → row spans index and its label
        columns as categories, from memory or disk."""
        with self._lock:
            hit = self._tables.get(key)
            if hit is not None:
                self._tables.move_to_end(key)
                return hit
        table = read_table(path)
        # The string columns also as categories: a gather of Arrow strings costs ~10 µs a row (one
        # quantity over 154 checkpoints of a 26M-row table took 0.4 s), of category codes next to
        # nothing (1 byte a row each).
        labels = {c: pd.Categorical(table[c]) for c in _LABEL_COLUMNS if c in table.columns}
        entry = (table, _row_spans(table), labels)
        if len(table) <= self.CACHED_ROWS:
            with self._lock:
                self._tables[key] = entry
                while len(self._tables) > self.CACHED_TABLES or (
                    sum(len(cached[0]) for cached in self._tables.values()) > self.CACHED_ROWS
                ):
                    self._tables.popitem(last=False)
        return entry

    def list_ids(self) -> list[str]:
        """Analysis ids, most recently touched first."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir() if p.is_dir() and _ID.match(p.name)]
        return [p.name for p in sorted(dirs, key=lambda p: p.stat().st_mtime, reverse=True)]

    def delete(self, aid: str) -> None:
        d = self._dir(aid)
        if d.is_dir():
            # Rename first so a reader never sees a half-deleted folder.
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".deleting-"))
            os.replace(d, tmp / aid)
            shutil.rmtree(tmp, ignore_errors=True)
