"""The floating-point type a model's weights are loaded in (``AnalysisRequest.dtype``).

``"float32"``, ``"bfloat16"`` and ``"float16"`` are taken as given. ``"auto"`` is float32 on a CPU
(the tiny and small models people measure there gain nothing from half precision, and a CPU computes
float32 as fast), and on a GPU bfloat16 for models of at least ``Settings.auto_half_precision_params``
parameters (float16 on a GPU without bfloat16), float32 below: a billion-parameter model in float32
takes 4 GB of GPU memory before any activation.

Whatever the load type, the measures compute in float64 (docs/measures.md, "Precision"): the captured
scores are cast to float64 as they are captured, and the spectra cast each weight matrix.

Counting a model's parameters reads no weights: our series' manifest config, the safetensors headers
of a local directory (every file checked to resolve inside the model roots), TransformerLens's config
for ``tl:`` names, the hub's safetensors metadata for ``hub:`` names. Only ``"auto"`` on a GPU counts.
Importing this module does not import torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from phasescope.config import Settings, get_settings
from phasescope.errors import ModelLoadError, PathNotAllowed

if TYPE_CHECKING:
    import torch

    from phasescope.models.loading import ModelRef

__all__ = ["LOAD_DTYPES", "LoadDtype", "count_parameters", "resolve_load_dtype", "torch_dtype"]

LoadDtype = Literal["auto", "float32", "bfloat16", "float16"]
LOAD_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
# A safetensors header is JSON of a few KB per hundred tensors; anything larger is not one.
_MAX_HEADER_BYTES = 100 * 2**20


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a resolved load dtype name ("float32", "bfloat16", "float16")."""
    import torch

    if name not in LOAD_DTYPES or name == "auto":
        raise ValueError(f"not a concrete load dtype: {name!r}")
    return getattr(torch, name)


def resolve_load_dtype(
    choice: str, device: str, n_params: Callable[[], int | None], settings: Settings | None = None
) -> str:
    """The concrete dtype a model loads in.

    Args:
        choice: ``AnalysisRequest.dtype``.
        device: the torch device the model goes to ("cpu", "cuda", "cuda:1", ...).
        n_params: counts the model's parameters (called only for "auto" on a GPU); None when unknown,
            which loads in float32.
        settings: where the threshold is (``auto_half_precision_params``).

    Returns:
        "float32", "bfloat16" or "float16".
    """
    if choice not in LOAD_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(LOAD_DTYPES)}, not {choice!r}")
    if choice != "auto":
        return choice
    if not str(device).startswith("cuda"):
        return "float32"
    settings = settings or get_settings()
    count = n_params()
    if count is None or count < settings.auto_half_precision_params:
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def count_parameters(ref: ModelRef, step: int, settings: Settings | None = None) -> int | None:
    """The number of parameters of a model at one checkpoint, without loading its weights.

    Returns:
        The count, or None when it cannot be known without loading (a pickled ``.bin`` whose element
        size the config does not say, a hub that cannot be reached).
    """
    settings = settings or get_settings()
    if ref.kind in ("zoo", "series"):
        from phasescope.models.series import read_manifest

        assert ref.path is not None
        return _tl_config_params(read_manifest(ref.path).config)
    if ref.kind in ("hf", "hf_series"):
        assert ref.path is not None
        directory = ref.path
        if ref.kind == "hf_series":
            from phasescope.models.hf import hf_trainer_checkpoint_dir

            directory = hf_trainer_checkpoint_dir(ref.path, step)
        return _local_params(directory, settings)
    if ref.kind == "tl":
        return _tl_pretrained_params(ref.name)
    if ref.kind == "hub":
        return _hub_params(ref, step, settings)
    return None


def _tl_config_params(config: dict[str, Any]) -> int:
    """Parameters of a HookedTransformer config: its blocks (TransformerLens's n_params) and embeddings."""
    import warnings

    from transformer_lens import HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cfg = HookedTransformerConfig(**config)
    return _with_embeddings(cfg)


def _with_embeddings(cfg: Any) -> int:
    # TransformerLens's n_params counts the attention and MLP weights only.
    total = int(cfg.n_params) + int(cfg.d_vocab) * int(cfg.d_model) + int(cfg.d_vocab_out) * int(cfg.d_model)
    if cfg.positional_embedding_type == "standard":
        total += int(cfg.n_ctx) * int(cfg.d_model)
    return total


def _tl_pretrained_params(name: str) -> int | None:
    """From TransformerLens's config of a pretrained name (reads the hub's config.json, no weights)."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    from phasescope.models.hf import resolve_tl_name

    try:
        cfg = get_pretrained_model_config(resolve_tl_name(name))
    except Exception:  # noqa: BLE001 - hub or config errors: an unknown count loads float32, and the
        return None  # load that follows reports the real error
    return _with_embeddings(cfg)


def _inside(path: Path, settings: Settings) -> Path:
    real = path.resolve()
    if not any(real == r or real.is_relative_to(r) for r in settings.allowed_roots):
        raise PathNotAllowed(f"{path.name} links outside the configured model roots", field="model")
    return real


def _safetensors_numel(path: Path) -> int:
    """Elements of every tensor in one safetensors file, from its header alone."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= _MAX_HEADER_BYTES:
            raise ModelLoadError(f"{path.name} is not a safetensors file (its header length is invalid)")
        header = json.loads(fh.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def _local_params(directory: Path, settings: Settings) -> int | None:
    """From the safetensors headers of a Hugging Face directory; pickled weights by their size."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    try:
        if single.is_file():
            return _safetensors_numel(_inside(single, settings))
        if index.is_file():
            weight_map = json.loads(_inside(index, settings).read_text()).get("weight_map", {})
            shards = sorted(set(weight_map.values()))
            return sum(_safetensors_numel(_inside(directory / s, settings)) for s in shards)
        # Pickled weights have no header we would read: their size over the element size the config names.
        config = json.loads(_inside(directory / "config.json", settings).read_text())
        element = {"float32": 4, "float16": 2, "bfloat16": 2}.get(
            str(config.get("torch_dtype") or config.get("dtype"))
        )
        bins = [directory / "pytorch_model.bin"]
        bin_index = directory / "pytorch_model.bin.index.json"
        if bin_index.is_file():
            weight_map = json.loads(_inside(bin_index, settings).read_text()).get("weight_map", {})
            bins = [directory / s for s in sorted(set(weight_map.values()))]
        if element is None or not all(b.is_file() for b in bins):
            return None
        return sum(_inside(b, settings).stat().st_size for b in bins) // element
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # The message names the directory only: no server path or exception text reaches a client.
        raise ModelLoadError(f"{directory.name}: the headers of its weight files cannot be read") from exc


def _hub_params(ref: ModelRef, step: int, settings: Settings) -> int | None:
    """From the hub's safetensors metadata of the checkpoint's revision (header requests only)."""
    try:
        from huggingface_hub import get_safetensors_metadata

        from phasescope.models.hub import checkpoint_revision

        repo_id, _, commit = checkpoint_revision(ref.spec, step, settings)
        meta = get_safetensors_metadata(repo_id, revision=commit)
    except Exception:  # noqa: BLE001 - unknown count means float32, never a failed job
        return None
    return int(sum(meta.parameter_count.values()))
