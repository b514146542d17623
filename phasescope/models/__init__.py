"""Models and checkpoints: model strings, loading, HF conversion, the hub, the TL catalog, our series format.

``loading`` names a model by one string and loads a checkpoint into TransformerLens; ``series`` is our
own checkpoint format; ``hf``/``hf_convert``/``hf_families`` read Hugging Face directories;
``hub`` reads branches of a hub repository; ``tl_catalog`` knows TransformerLens's names without
torch; ``identity`` says which weights an analysis reads; ``files`` keeps every read inside a model
root; ``dtype`` chooses what the weights are loaded in.
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

if TYPE_CHECKING:  # the re-exports, imported on first use (phasescope._lazy)
    from phasescope.models.identity import ResolvedRequest, resolve_request, weights_identity
    from phasescope.models.loading import (
        LoadedModel,
        ModelCache,
        ModelInfo,
        ModelRef,
        list_checkpoints,
        list_models,
        load_model,
        parse_model_spec,
        resolve_local_path,
    )
    from phasescope.models.series import (
        SeriesManifest,
        is_series_dir,
        read_manifest,
        write_random_series,
        write_series_checkpoint,
    )

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "LoadedModel",
    "ModelCache",
    "ModelInfo",
    "ModelRef",
    "ResolvedRequest",
    "SeriesManifest",
    "is_series_dir",
    "list_checkpoints",
    "list_models",
    "load_model",
    "parse_model_spec",
    "read_manifest",
    "resolve_local_path",
    "resolve_request",
    "weights_identity",
    "write_random_series",
    "write_series_checkpoint",
]
