"""phasescope: the phase behaviour of transformer models, measured across layers, heads and checkpoints.

The library is importable without a web server or a queue. Its public API is re-exported here
lazily: ``import phasescope`` imports neither torch nor pandas (the backend and the frontend import
it), and each name's module is imported the first time the name is used.

>>> import phasescope
>>> phasescope.parse_model_spec("zoo:induction-2l").kind
'zoo'
>>> phasescope.InputSpec().seq_len
64
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

__version__ = "0.1.0"

# Bumped whenever a measure's numbers could change: it is part of every analysis id, so a stored
# result is never served for a request that would now compute something different.
MEASURES_VERSION = "3"  # 3: per-prompt rows, chi and uncertainties (issue 14); beta* interpolated

if TYPE_CHECKING:  # the one list of re-exports: phasescope._lazy reads it at run time
    from phasescope.analysis.run import measure_checkpoint, run_local
    from phasescope.config import Settings, get_settings
    from phasescope.errors import (
        CheckpointNotFound,
        HubUnavailable,
        InvalidRequest,
        MeasureError,
        ModelLoadError,
        ModelNotFound,
        NotFound,
        PathNotAllowed,
        PhasescopeError,
        QueueFull,
        RateLimited,
        ServiceUnavailable,
        StorageError,
        StorageFull,
    )
    from phasescope.measures.energies import energy_table
    from phasescope.measures.entropy import entropy_table
    from phasescope.measures.heads import heads_table
    from phasescope.measures.landscape import landscape_table
    from phasescope.measures.llc import llc_table
    from phasescope.measures.loss import loss_table
    from phasescope.measures.registry import (
        Measure,
        OrderParameter,
        Quantity,
        default_measures,
        get_measure,
        measure_names,
        register_measure,
    )
    from phasescope.measures.sharpness import sharpness_table
    from phasescope.measures.spectra import spectra_table
    from phasescope.measures.tables import concat_tables, empty_table
    from phasescope.measures.thermo import thermo_table
    from phasescope.models.loading import (
        LoadedModel,
        ModelCache,
        ModelInfo,
        ModelRef,
        list_checkpoints,
        list_models,
        load_model,
        parse_model_spec,
    )
    from phasescope.phases.detect import Transition, detect_transitions
    from phasescope.phases.digest import checkpoint_digest
    from phasescope.phases.findings import find_transitions
    from phasescope.schemas import (
        AnalysisRequest,
        CheckpointRange,
        InputSpec,
        MeasureParams,
        analysis_id,
        select_steps,
    )
    from phasescope.service.client import ApiError, Client
    from phasescope.service.store import ResultStore, read_table
    from phasescope.zoo import ZOO, ZooSpec, train_series

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "AnalysisRequest",
    "ApiError",
    "CheckpointNotFound",
    "CheckpointRange",
    "Client",
    "HubUnavailable",
    "InputSpec",
    "InvalidRequest",
    "LoadedModel",
    "MEASURES_VERSION",
    "Measure",
    "MeasureError",
    "MeasureParams",
    "ModelCache",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFound",
    "ModelRef",
    "NotFound",
    "OrderParameter",
    "PathNotAllowed",
    "PhasescopeError",
    "Quantity",
    "QueueFull",
    "RateLimited",
    "ResultStore",
    "ServiceUnavailable",
    "Settings",
    "StorageError",
    "StorageFull",
    "Transition",
    "ZOO",
    "ZooSpec",
    "__version__",
    "analysis_id",
    "checkpoint_digest",
    "concat_tables",
    "default_measures",
    "detect_transitions",
    "empty_table",
    "energy_table",
    "entropy_table",
    "find_transitions",
    "get_measure",
    "get_settings",
    "heads_table",
    "landscape_table",
    "list_checkpoints",
    "list_models",
    "llc_table",
    "load_model",
    "loss_table",
    "measure_checkpoint",
    "measure_names",
    "parse_model_spec",
    "read_table",
    "register_measure",
    "run_local",
    "select_steps",
    "sharpness_table",
    "spectra_table",
    "thermo_table",
    "train_series",
]
