"""Pydantic models shared by the CLI, the backend, the workers and the client.

An *analysis* is a model + checkpoints + measures + inputs + parameters. Its id is a hash of the
canonical request (sorted keys, defaults filled in, ``MEASURES_VERSION`` included) and of the identity
of the weights it reads (``phasescope.models.identity``), so the same request on the same weights always gets
the same id, and new weights a new one. Importing this module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema

from phasescope import MEASURES_VERSION
from phasescope.config import get_settings
from phasescope.errors import CheckpointNotFound, InvalidRequest
from phasescope.measures.registry import default_measures, measure_names

__all__ = [
    "ALL_MEASURES",
    "ANALYSIS_ID_PATTERN",
    "AnalysisRequest",
    "CheckpointRange",
    "CheckpointSpacing",
    "InputSpec",
    "MeasureName",
    "MeasureParams",
    "analysis_id",
    "select_steps",
]

# What analysis_id returns (24 hex digits): routes, the store, patterns and gc accept only this.
ANALYSIS_ID_PATTERN = r"^[0-9a-f]{24}$"

ALL_MEASURES = "all"
"""What ``measures`` (or one of its items) may say to ask for every registered measure."""


def _known_measure(name: str) -> str:
    # Read the registry now, not at import: a measure registered later is valid from then on.
    names = measure_names()
    if name not in names:
        raise ValueError(f"unknown measure {name!r}; choose from {', '.join(names)}, or '{ALL_MEASURES}'")
    return name


class _RegisteredMeasuresEnum:
    """JSON-schema hook: the enum of measure names, read from the registry when a schema is generated."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = dict(handler(schema))
        json_schema["enum"] = list(measure_names())
        return json_schema


MeasureName = Annotated[str, AfterValidator(_known_measure), _RegisteredMeasuresEnum()]
"""A registered measure's name (``phasescope.measures.registry``), checked when validated."""


def _measures_or_all(schema: dict[str, Any]) -> None:
    # The OpenAPI document says that "all" is accepted too, beside the list of names.
    listed = {k: schema.pop(k) for k in ("type", "items", "minItems") if k in schema}
    schema["anyOf"] = [listed, {"const": ALL_MEASURES, "type": "string"}]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckpointRange(_Strict):
    """Every available step in ``[start, stop]``, keeping every ``every``-th one."""

    start: int = Field(0, ge=0, description="First training step (inclusive).")
    stop: int | None = Field(None, ge=0, description="Last training step (inclusive); None = the last.")
    every: int = Field(1, ge=1, le=100_000, description="Keep every n-th available step.")


class CheckpointSpacing(_Strict):
    """``count`` steps spread over the available ones, linearly or log-spaced in step."""

    count: int = Field(..., ge=1, le=10_000, description="How many checkpoints to pick.")
    spacing: Literal["linear", "log"] = "log"


CheckpointSelection = Annotated[
    Literal["all", "last"] | list[Annotated[int, Field(ge=0)]] | CheckpointRange | CheckpointSpacing,
    Field(description="'all', 'last', a list of steps, a range or a spacing."),
]


class InputSpec(_Strict):
    """What to measure on. Zoo models use their own task data (they take no texts: no tokenizer)."""

    texts: list[str] | None = Field(
        None, description="Texts for language models; None = the built-in set (zoo: the task's own data)."
    )
    n_prompts: int | None = Field(
        None,
        ge=1,
        description="Prompts per checkpoint; None = 16 for texts, 64 for zoo induction tasks, every pair for grokking.",
    )
    seq_len: int = Field(64, ge=4, description="Tokens per prompt for text inputs (zoo tasks fix their own).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for prompt sampling and random probes.")
    prompt_style: Literal["family", "raw"] = Field(
        "family",
        description="'family': each text prompt starts the way the model family expects (BOS first for "
        "decoders that prepend one, [CLS] ... [SEP] for encoders), inside seq_len tokens; 'raw': plain "
        "windows of the token stream. Zoo task data is never changed.",
    )

    @field_validator("texts")
    @classmethod
    def _texts_within_limits(cls, texts: list[str] | None) -> list[str] | None:
        if texts is None:
            return None
        s = get_settings()
        if not texts:
            raise ValueError("texts is empty: give at least one text, or null for the built-in set")
        if len(texts) > s.max_texts:
            raise ValueError(f"{len(texts)} texts is over the limit of {s.max_texts} (max_texts)")
        long = [i for i, t in enumerate(texts) if len(t) > s.max_text_chars]
        if long:
            raise ValueError(
                f"text {long[0]} is over the limit of {s.max_text_chars} characters (max_text_chars)"
            )
        if not any(t.strip() for t in texts):
            raise ValueError("every text is blank")
        return texts

    @model_validator(mode="after")
    def _counts_within_limits(self) -> InputSpec:
        s = get_settings()
        if self.n_prompts is not None and self.n_prompts > s.max_prompts:
            raise ValueError(f"n_prompts {self.n_prompts} is over the limit of {s.max_prompts} (max_prompts)")
        if self.seq_len > s.max_seq_len:
            raise ValueError(f"seq_len {self.seq_len} is over the limit of {s.max_seq_len} (max_seq_len)")
        return self


class MeasureParams(_Strict):
    """Parameters of the measures, each with its limits (see docs/measures.md for what they do)."""

    beta_min: float = Field(0.05, gt=0, le=1, description="Lowest inverse temperature of the sweep.")
    beta_max: float = Field(20.0, ge=1, le=1000, description="Highest inverse temperature of the sweep.")
    n_beta: int = Field(
        61, ge=3, description="Points on the β grid (uniform between log-spaced knots; odd: β = 1 is on it)."
    )
    energy_bins: int = Field(50, ge=5, le=500, description="Histogram bins of attention energies.")
    heavy_prompts: int = Field(
        64,
        ge=1,
        le=4096,
        description="Prompts the landscape, sharpness and llc measures use (the first ones).",
    )
    landscape_dims: Literal[1, 2] = Field(
        2, description="1: a line, 2: a plane of filter-normalised directions."
    )
    landscape_points: int = Field(
        11, ge=3, le=41, description="Grid points per direction (11 → 11×11 = 121 losses)."
    )
    landscape_radius: float = Field(
        1.0, gt=0, le=10, description="Half-width of the grid, in direction units."
    )
    landscape_seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of the random directions (same seed, same plane)."
    )
    sharpness_k: int = Field(3, ge=1, le=20, description="Top Hessian eigenvalues to compute.")
    sharpness_method: Literal["lanczos", "power"] = Field("lanczos", description="Eigen solver.")
    hutchinson_samples: int = Field(
        16, ge=0, le=256, description="Probes of the Hutchinson trace (0: no trace)."
    )
    llc_chains: int = Field(
        4, ge=1, le=16, description="SGLD chains (their spread is the LLC's uncertainty)."
    )
    llc_draws: int = Field(100, ge=10, le=2000, description="SGLD steps per chain.")
    llc_lr: float = Field(1e-4, gt=0, le=0.1, description="SGLD step size ε.")
    llc_localization: float = Field(100.0, ge=0, le=1e6, description="SGLD pull γ towards the checkpoint.")
    slq_steps: int = Field(
        24,
        ge=2,
        le=200,
        description="Lanczos steps m per probe of the Hessian's spectral density (moments up to 2m − 1 "
        "exact per probe; memory m × parameters × 8 bytes).",
    )
    slq_probes: int = Field(
        4, ge=1, le=64, description="Rademacher probes of the Hessian's spectral density (their spread: se)."
    )
    head_llc_max_heads: int = Field(
        8,
        ge=1,
        le=4096,
        description="Most heads head_llc samples per checkpoint (one SGLD run of head_llc_chains × "
        "head_llc_draws steps each); a model with more heads is refused. Its cost is priced on this many.",
    )
    # head_llc runs the sampler once per head, so it has its own, smaller sampler than llc: a per-head
    # value is read against other heads and checkpoints at the same settings (docs/measures.md).
    head_llc_chains: int = Field(
        2, ge=1, le=16, description="SGLD chains per head of head_llc (their spread is its se; 1: no se)."
    )
    head_llc_draws: int = Field(50, ge=10, le=2000, description="SGLD steps per chain of head_llc.")

    @model_validator(mode="after")
    def _grid_within_limits(self) -> MeasureParams:
        limit = get_settings().max_beta_points
        if self.n_beta > limit:
            raise ValueError(f"n_beta {self.n_beta} is over the limit of {limit} (max_beta_points)")
        return self


class AnalysisRequest(_Strict):
    """One analysis: what to measure, on which model, checkpoints and inputs."""

    model: str = Field(
        ..., min_length=1, max_length=300, description="zoo:<name>, tl:<name> or a local path."
    )
    checkpoints: CheckpointSelection = "all"
    measures: list[MeasureName] = Field(
        default_factory=lambda: sorted(default_measures()),
        min_length=1,
        description=f"Measures to run: registered names, or '{ALL_MEASURES}' for every one.",
        json_schema_extra=_measures_or_all,
    )
    inputs: InputSpec = Field(default_factory=InputSpec)
    params: MeasureParams = Field(default_factory=MeasureParams)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Floating-point type the weights are loaded in. 'auto': float32 on a CPU, bfloat16 on a "
        "GPU for models of at least a billion parameters. Measures still compute in float64.",
    )

    @field_validator("measures", mode="before")
    @classmethod
    def _expand_all(cls, measures: Any) -> Any:
        # "all" (alone, or as an item) is every measure registered at validation time.
        if measures == ALL_MEASURES or (isinstance(measures, list) and ALL_MEASURES in measures):
            return list(measure_names())
        return measures

    @field_validator("measures")
    @classmethod
    def _unique_sorted(cls, measures: list[str]) -> list[str]:
        # Order does not change the result, so it must not change the id either.
        return sorted(set(measures))

    @field_validator("inputs")
    @classmethod
    def _texts_need_a_tokenizer(cls, inputs: InputSpec, info: ValidationInfo) -> InputSpec:
        # A zoo series reads its task's own tokens and has no tokenizer: refuse texts here (422 at POST),
        # not in the worker after the request was queued.
        model = str(info.data.get("model", "")).strip()
        if model.startswith("zoo:") and inputs.texts is not None:
            raise ValueError(
                f"texts: {model} is measured on its own task's data and has no tokenizer for texts; "
                "leave inputs.texts out (or null)"
            )
        return inputs

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _selection_shape(cls, value: Any) -> Any:
        # Say what is wrong with what was sent: pydantic's own error for a union names only its first
        # member ("Input should be 'all' or 'last'") whatever the shape sent was.
        return _check_selection_shape(value)

    @field_validator("checkpoints")
    @classmethod
    def _checkpoint_count(cls, value: Any) -> Any:
        if isinstance(value, list):
            limit = get_settings().max_checkpoints
            if not value:
                raise ValueError("checkpoints is an empty list: give steps, 'all', a range or a spacing")
            if len(value) > limit:
                raise ValueError(f"{len(value)} checkpoints is over the limit of {limit} (max_checkpoints)")
            return sorted(set(value))
        return value

    def canonical(self) -> dict[str, Any]:
        """The request with defaults filled in, plus the measures version: what the id hashes."""
        return {"request": self.model_dump(mode="json"), "measures_version": MEASURES_VERSION}


_SELECTION_FORMS = (
    "'all', 'last', a list of steps, a range {start, stop, every} or a spacing {count, spacing}"
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_selection_shape(value: Any) -> Any:
    """``value`` if it has the shape of a checkpoint selection, else a ValueError that says what is wrong."""
    if isinstance(value, (CheckpointRange, CheckpointSpacing)):
        return value
    if isinstance(value, str):
        if value not in ("all", "last"):
            raise ValueError(f"{_short(value)} is not a checkpoint selection: use {_SELECTION_FORMS}")
        return value
    if isinstance(value, list):
        for i, step in enumerate(value):
            whole = isinstance(step, int) or (isinstance(step, float) and step.is_integer())
            if isinstance(step, bool) or not whole:
                raise ValueError(
                    f"checkpoints[{i}] is {_short(step)}: a step is a whole number (0, 1000, ...)"
                )
            if step < 0:
                raise ValueError(f"checkpoints[{i}] is {step!r}: steps start at 0")
        return value
    if isinstance(value, dict):
        kind = CheckpointSpacing if "count" in value or "spacing" in value else CheckpointRange
        word = "a spacing {count, spacing}" if kind is CheckpointSpacing else "a range {start, stop, every}"
        unknown = sorted(set(value) - set(kind.model_fields))
        if unknown:
            raise ValueError(f"checkpoints is read as {word}, which has no {_short(unknown)[1:-1]}")
        try:
            return kind.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"][:1].lower() + err["msg"][1:]
            raise ValueError(
                f"checkpoints is read as {word}; its {where} is {_short(err.get('input'))}: {msg}"
            ) from None
    raise ValueError(f"checkpoints is {type(value).__name__} {_short(value)}: use {_SELECTION_FORMS}")


def analysis_id(request: AnalysisRequest, weights: dict[int, str] | None = None) -> str:
    """Content address of a request and the weights it reads (24 hex digits of SHA-256).

    Args:
        request: the validated request.
        weights: identity per selected step (``phasescope.models.identity.weights_identity``): new weights
            under the same request give a new id. None or empty: the request alone (as before
            weights were named, so older ids stay valid).
    """
    canonical = request.canonical()
    if weights:
        canonical["weights"] = {str(step): weights[step] for step in sorted(weights)}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def select_steps(selection: Any, available: list[int], model: str = "") -> list[int]:
    """Resolve a checkpoint selection against the steps a model has.

    Raises:
        CheckpointNotFound: a listed step does not exist (the error lists the valid ones).
        InvalidRequest: the selection picks nothing or more than ``max_checkpoints``.
    """
    available = sorted(available)
    if not available:
        raise CheckpointNotFound(f"{model} has no checkpoints", field="checkpoints", model=model)
    if selection == "all":
        chosen = available
    elif selection == "last":
        chosen = available[-1:]
    elif isinstance(selection, list):
        missing = [s for s in selection if s not in set(available)]
        if missing:
            raise CheckpointNotFound(
                f"{model} has no checkpoint at step {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                field="checkpoints",
                choices=available,
                model=model,
            )
        chosen = list(selection)
    elif isinstance(selection, CheckpointRange):
        stop = available[-1] if selection.stop is None else selection.stop
        chosen = [s for s in available if selection.start <= s <= stop][:: selection.every]
    elif isinstance(selection, CheckpointSpacing):
        chosen = _spaced(available, selection.count, selection.spacing)
    else:  # pragma: no cover - pydantic has already validated the type
        raise InvalidRequest(f"unknown checkpoint selection {selection!r}", field="checkpoints")
    if not chosen:
        raise InvalidRequest(
            f"the checkpoint selection picks none of {model}'s steps ({available[0]}…{available[-1]})",
            field="checkpoints",
        )
    limit = get_settings().max_checkpoints
    if len(chosen) > limit:
        raise InvalidRequest(
            f"the selection picks {len(chosen)} checkpoints, over the limit of {limit} (max_checkpoints); "
            "use a range with 'every' or a spacing with 'count'",
            field="checkpoints",
        )
    return chosen


def _spaced(available: list[int], count: int, spacing: str) -> list[int]:
    """The available steps nearest to ``count`` targets spaced linearly or logarithmically."""
    if count >= len(available):
        return available
    lo, hi = available[0], available[-1]
    if spacing == "log":
        # log(1 + step) so that step 0 (initialisation) can be included.
        a, b = math.log1p(lo), math.log1p(hi)
        targets = [math.expm1(a + (b - a) * i / (count - 1)) if count > 1 else hi for i in range(count)]
    else:
        targets = [lo + (hi - lo) * i / (count - 1) if count > 1 else hi for i in range(count)]
    picked = sorted({min(available, key=lambda s, t=t: abs(s - t)) for t in targets})
    return picked
