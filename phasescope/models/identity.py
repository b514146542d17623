"""The identity of the weights an analysis reads: part of its id, checked again when a job loads them.

An analysis id hashes the request *and* one identity string per selected checkpoint, so retraining a
series in place or replacing a local model's files gives a new id (and new results) instead of the
old finished ones. Identities are cheap and torch-free, because the API computes them on every POST:

- ``zoo:`` series and our series directories: the SHA-256 of ``manifest.json``'s bytes plus a
  fingerprint of the step's safetensors file;
- a Hugging Face model directory, or one Trainer ``checkpoint-<step>/`` folder: the fingerprints of
  ``config.json``, every weight file transformers loads and the tokenizer files (they decide the
  prompts);
- ``tl:`` and other hub models: the commit sha of the revision each step loads, from
  ``phasescope.models.hub.revision_identity``.

A file's fingerprint is its size, its modification time (ns) and a hash of its content: for a
safetensors file only its header (dtypes, shapes, offsets; the first 8 bytes give its length), for any
other weight file the whole file. Fingerprints are cached in-process by ``(path, size, mtime_ns)``, so
asking again costs a ``stat`` per file.

Every file read resolves inside the model roots (``Settings.allowed_roots``): a symlink out of them is
refused.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasescope.config import Settings, get_settings
from phasescope.errors import ModelLoadError, PathNotAllowed
from phasescope.models.series import MANIFEST_NAME, checkpoint_filename

if TYPE_CHECKING:
    from phasescope.models.loading import ModelRef
    from phasescope.schemas import AnalysisRequest

__all__ = [
    "LOCAL_KINDS",
    "ResolvedRequest",
    "describe",
    "file_fingerprint",
    "resolve_request",
    "series_digest",
    "verify_step_identity",
    "weights_identity",
]

LOCAL_KINDS = ("zoo", "series", "hf", "hf_series")
"""Model kinds whose weights are files under the model roots (the worker re-checks those at load)."""

# Files transformers reads a model from (sharded or not), and the tokenizer files build_batch reads.
_HF_WEIGHT_GLOBS = (
    "model*.safetensors",
    "model*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
)
_HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
)
# A safetensors header is JSON of a few KB per hundred tensors; anything larger is not one.
_MAX_HEADER_BYTES = 100 * 2**20
_CHUNK = 4 * 2**20
# Fingerprints by (real path, size, mtime_ns); ~200 bytes each, so 100k entries stay under ~20 MB.
_MAX_CACHED = 100_000
_FINGERPRINTS: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ResolvedRequest:
    """A request checked against its model: the steps it selects, their weights, and its id.

    Attributes:
        steps: the selected training steps, ascending.
        weights: identity string per step (empty when the model's kind has none to offer).
        aid: the analysis id (request + weights).
    """

    steps: list[int]
    weights: dict[int, str]
    aid: str


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _inside_roots(path: Path, settings: Settings) -> Path:
    """The real path of ``path``, refused when it resolves outside every model root."""
    real = path.resolve()
    if not any(real == root or real.is_relative_to(root) for root in settings.allowed_roots):
        # The message names the file, not the server's directories.
        raise PathNotAllowed(f"{path.name} links outside the configured model roots", field="model")
    return real


def _content_digest(real: Path, size: int) -> str:
    """A hash of the safetensors header, or of the whole file for any other format."""
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        if real.name.endswith(".safetensors"):
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(_MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(f"{real.name} is not a safetensors file (its header length is invalid)")
            h.update(head)
            h.update(fh.read(n))
        else:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def file_fingerprint(path: Path, settings: Settings | None = None) -> str:
    """Fingerprint of one file: name, size, mtime (ns) and a content hash (see the module docstring).

    Args:
        path: the file, under one of the model roots.
        settings: where the model roots are.

    Raises:
        PathNotAllowed: the file resolves outside the model roots.
        ModelLoadError: the file is missing, unreadable, or a safetensors file with a broken header.
    """
    settings = settings or get_settings()
    real = _inside_roots(path, settings)
    try:
        st = real.stat()
        key = (str(real), st.st_size, st.st_mtime_ns)
        with _LOCK:
            hit = _FINGERPRINTS.get(key)
            if hit is not None:
                _FINGERPRINTS.move_to_end(key)
                return hit
        content = _content_digest(real, st.st_size)
    except OSError as exc:
        raise ModelLoadError(f"{path.name} cannot be read ({exc.strerror or 'I/O error'})") from exc
    value = _digest(path.name, str(st.st_size), str(st.st_mtime_ns), content)
    with _LOCK:
        _FINGERPRINTS[key] = value
        while len(_FINGERPRINTS) > _MAX_CACHED:
            _FINGERPRINTS.popitem(last=False)
    return value


def _files_identity(files: list[Path], settings: Settings) -> str:
    return "files:" + _digest(*(file_fingerprint(f, settings) for f in files))[:32]


def series_digest(ref: ModelRef, settings: Settings | None = None) -> str | None:
    """SHA-256 of a series' manifest.json bytes (its architecture and task), or None for other kinds."""
    if ref.kind not in ("zoo", "series") or ref.path is None:
        return None
    settings = settings or get_settings()
    path = ref.path / MANIFEST_NAME
    real = _inside_roots(path, settings)
    try:
        return hashlib.sha256(real.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelLoadError(
            f"{ref.spec}: {MANIFEST_NAME} cannot be read ({exc.strerror or 'I/O error'})"
        ) from exc


def _hf_files(directory: Path, tokenizer_dirs: list[Path]) -> list[Path]:
    files = [directory / "config.json"]
    for pattern in _HF_WEIGHT_GLOBS:
        files += sorted(directory.glob(pattern))
    for tok_dir in tokenizer_dirs:
        found = [tok_dir / f for f in _HF_TOKENIZER_FILES if (tok_dir / f).is_file()]
        if found:  # hf_models._local_tokenizer reads the first folder that has tokenizer files
            files += found
            break
    return files


def _local_identity(ref: ModelRef, step: int, settings: Settings, manifest: str | None) -> str:
    assert ref.path is not None
    if ref.kind in ("zoo", "series"):
        fingerprint = file_fingerprint(ref.path / checkpoint_filename(step), settings)
        return "files:" + _digest(manifest or "", fingerprint)[:32]
    if ref.kind == "hf_series":
        from phasescope.models.hf import hf_trainer_checkpoint_dir

        directory = hf_trainer_checkpoint_dir(ref.path, step)
        return _files_identity(_hf_files(directory, [directory, ref.path]), settings)
    return _files_identity(_hf_files(ref.path, [ref.path]), settings)


def weights_identity(
    spec: str | ModelRef, steps: list[int], settings: Settings | None = None
) -> dict[int, str]:
    """One identity string per step: what a job at that step will read (see the module docstring).

    Args:
        spec: a model string or a parsed reference.
        steps: steps from ``list_checkpoints(spec)``.
        settings: model roots and data directory.

    Returns:
        ``{step: identity}``: ``files:<32 hex>`` for local files, ``commit:<40 hex>`` for hub revisions.

    Raises:
        PathNotAllowed: a file links outside the model roots.
        ModelLoadError: a listed file is missing or unreadable.
        CheckpointNotFound: a step has no checkpoint folder.
        HubUnavailable: the hub cannot be asked which commit a step is.
    """
    from phasescope.models.loading import parse_model_spec

    settings = settings or get_settings()
    ref = spec if not isinstance(spec, str) else parse_model_spec(spec, settings)
    if ref.kind in LOCAL_KINDS:
        manifest = series_digest(ref, settings)
        return {step: _local_identity(ref, step, settings, manifest) for step in steps}
    from phasescope.models.hub import revision_identity

    return {int(k): f"commit:{v}" for k, v in revision_identity(ref.spec, steps, settings).items()}


def resolve_request(request: AnalysisRequest, settings: Settings | None = None) -> ResolvedRequest:
    """Check a request against its model's listing and name what it reads; nothing is loaded.

    Raises:
        ModelNotFound, CheckpointNotFound, PathNotAllowed, InvalidRequest, ModelLoadError: from the
            model string, the checkpoint selection and the files.
    """
    from phasescope.models.loading import list_checkpoints, parse_model_spec
    from phasescope.schemas import analysis_id, select_steps

    settings = settings or get_settings()
    ref = parse_model_spec(request.model, settings)
    steps = select_steps(request.checkpoints, list_checkpoints(ref, settings), request.model)
    weights = weights_identity(ref, steps, settings)
    return ResolvedRequest(steps, weights, analysis_id(request, weights))


def verify_step_identity(model: str, step: int, expected: str, settings: Settings | None = None) -> None:
    """Fail when a checkpoint's weights no longer match the identity recorded at submission.

    Local files are fingerprinted again. A hub model's branch is looked up again (through the
    process's branch cache, ``Settings.hub_refs_ttl_s``), and the loaders read the revision by the
    commit that same cache names, so a branch pushed to between POST and load is caught here instead
    of being measured under the old commit's identity.

    Raises:
        ModelLoadError: the weights changed since the analysis was submitted.
    """
    from phasescope.models.loading import parse_model_spec

    settings = settings or get_settings()
    ref = parse_model_spec(model, settings)
    if ref.kind not in LOCAL_KINDS and not expected.startswith("commit:"):
        return
    now = weights_identity(ref, [step], settings)[step]
    if now != expected:
        raise ModelLoadError(
            f"the weights of {model} at step {step} changed after this analysis was submitted "
            f"(identity {expected[:18]}… is now {now[:18]}…); submit the request again to analyse the "
            "new weights",
            model=model,
            checkpoint=step,
        )


def describe(weights: dict[Any, str]) -> dict[str, str]:
    """Identities keyed by step as JSON keys (strings), in step order."""
    return {str(k): v for k, v in sorted(weights.items(), key=lambda kv: int(kv[0]))}
