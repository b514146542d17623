"""What the REST API answers: one pydantic model per response body, shared by the backend and the client.

The backend declares these as ``response_model`` (so ``/openapi.json`` describes every body) and the
client (``phasescope.service.client``) parses into them. No torch here, nor anything that needs a
queue: a notebook can import this module alone.

An analysis has one shape in every state (queued, running, finished, partial, failed, cancelled):
the same keys always, ``null`` where a value is not known yet (``findings`` before the analysis has
finished, ``shape`` before its first checkpoint is stored, ``timings.finished_at`` while it runs).

Floats that are not finite (an uncertainty with too few resamples, the SNR of a noiseless series)
are sent as ``null``: JSON has no NaN or infinity.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "AnalysisList",
    "AnalysisState",
    "AnalysisStatus",
    "AnalysisSummary",
    "CheckpointList",
    "EnsembleLayer",
    "EnsembleResponse",
    "EnsembleSeed",
    "ErrorBody",
    "ErrorItem",
    "ExponentFit",
    "FailedJob",
    "Findings",
    "Health",
    "Links",
    "ModelEntry",
    "ModelList",
    "ModelShape",
    "PatternIndex",
    "PatternMatrix",
    "Progress",
    "Readiness",
    "ResultsPage",
    "RunningJob",
    "SusceptibilityPeak",
    "Timings",
    "Transition",
    "marked_transition",
]


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# A float that JSON can carry: NaN and ±inf become null.
_Finite = Annotated[float | None, BeforeValidator(_finite_or_none)]


class _Body(BaseModel):
    # Every key the API sends is declared: an undeclared one is a bug the schema test catches.
    model_config = ConfigDict(extra="forbid")


class ErrorItem(_Body):
    """One validation problem: which field, what is wrong with it."""

    field: str | None = Field(description="Dotted path of the field at fault (null: the whole request).")
    detail: str


class ErrorBody(_Body):
    """Every error the API answers with (4xx and 5xx): what happened and what to change."""

    error: str = Field(description="A stable code: not_found, invalid_request, rate_limited, ...")
    detail: str = Field(description="One sentence a person can act on.")
    field: str | None = Field(description="The request field at fault, when there is one.")
    choices: list[Any] | None = Field(None, description="Valid alternatives (at most 50).")
    errors: list[ErrorItem] | None = Field(None, description="Every validation problem (422 only).")
    retry_after_s: int | None = Field(None, description="Seconds to wait before trying again (429, 503).")
    request_id: str | None = Field(None, description="Where the server's log has the details (500, 503).")
    free_mb: float | None = Field(None, description="MiB free on the data directory's disk (507).")
    min_free_mb: float | None = Field(None, description="MiB below which new analyses are refused (507).")


AnalysisState = Literal["queued", "running", "finished", "partial", "failed", "cancelled"]


class Links(_Body):
    """Where to find an analysis (paths on the same server)."""

    self: str = Field(description="Its status: GET here.")
    results: str = Field(description="Its tidy table.")
    dashboard: str = Field(description="Its page in the dashboard.")


class RunningJob(_Body):
    """A checkpoint a worker is measuring now."""

    checkpoint: int | None = Field(
        description="Its training step; null for the analysis's series job (it reads every checkpoint)."
    )
    job: str = Field(description="The RQ job id: <analysis id>-<step>.")
    stage: str | None = Field(None, description="queued, loading or measuring.")
    pid: int | None = Field(None, description="The worker's process id.")
    started_at: float | None = Field(None, description="Unix time (s) the worker took the job.")
    worker: str | None = Field(None, description="The worker's name.")


class FailedJob(_Body):
    """A checkpoint whose job failed, was stopped or cancelled."""

    checkpoint: int | None = Field(description="Its training step; null for the analysis's series job.")
    job: str
    status: str = Field(description="RQ's status of the job: failed, stopped, canceled.")
    error: str = Field(description="The last line of the job's error.")


class Progress(_Body):
    """How far an analysis is, in checkpoints."""

    done: int = Field(description="Checkpoints with a stored result.")
    total: int = Field(description="Checkpoints the analysis selected.")
    fraction: float = Field(description="done / total, in [0, 1].")
    current_checkpoint: int | None = Field(description="A checkpoint being measured now (null: none).")
    running: list[RunningJob]
    queued: int = Field(description="Checkpoints waiting for a worker.")
    failed: int = Field(description="Checkpoints whose job failed or was stopped.")


class Timings(_Body):
    """When things happened (Unix time, s) and how long they took (s)."""

    created_at: float | None = Field(description="When the analysis was first submitted.")
    finished_at: float | None = Field(description="When its results were merged (null until finished).")
    elapsed_seconds: float | None = Field(
        description="Since it was submitted (finished: from submission to the merge)."
    )
    wall_seconds: float | None = Field(description="From submission to the merge (null until finished).")
    seconds_per_checkpoint: dict[str, float | None] = Field(
        description="Each stored checkpoint's measuring time, keyed by step."
    )


class Transition(_Body):
    """One detected transition of one order parameter (``phasescope.phases.detect.Transition``).

    docs/measures.md ("Finding the transition") defines each number.
    """

    quantity: str = Field(description="The order parameter, e.g. loss or induction_score.")
    layer: int | None = Field(description="Its layer (null: a model-level quantity).")
    head: int | None = Field(description="Its head (null: a layer- or model-level quantity).")
    step: float = Field(description="Where it happens (training steps).")
    step_lo: int = Field(description="The last checkpoint at or before step.")
    step_hi: int = Field(description="The first checkpoint after step.")
    uncertainty: _Finite = Field(description="Standard deviation of step (steps); null when unknown.")
    uncertainty_method: str
    step_ci_lo: _Finite = Field(
        None, description="Lower end of the 95% percentile interval of step (steps), by uncertainty_method."
    )
    step_ci_hi: _Finite = Field(None, description="Upper end of that interval (steps).")
    before: float = Field(description="The fitted value at the first checkpoint.")
    after: float = Field(description="The fitted value at the last checkpoint.")
    size: float = Field(description="after − before.")
    kind: str = Field(description="step or peak.")
    peak: _Finite = Field(description="For a peak, the fitted value at its top; else null.")
    method: str = Field(description="How step was located.")
    window_lo: float = Field(description="Start of the transition window (steps).")
    window_hi: float = Field(description="End of the transition window (steps).")
    snr: _Finite = Field(description="Amplitude over residual noise; null when the fit has no noise.")
    coarse: bool = Field(description="The window is narrower than the checkpoint interval.")


class SusceptibilityPeak(_Body):
    """Where an order parameter's susceptibility χ(t) peaks (``phasescope.phases.susceptibility``).

    docs/measures.md ("Finding the transition") states the peak, interval and significance rules.
    """

    quantity: str = Field(description="The order parameter m; χ is the quantity m_chi.")
    layer: int | None
    head: int | None
    peak_step: float = Field(description="Where χ peaks (training steps).")
    peak_ci_lo: _Finite = Field(description="Lower end of the peak step's 95% bootstrap interval.")
    peak_ci_hi: _Finite = Field(description="Upper end of that interval.")
    peak_value: float = Field(description="The largest χ.")
    peak_se: _Finite = Field(description="Its standard error.")
    baseline: _Finite = Field(description="χ away from the peak (null: too few checkpoints there).")
    baseline_se: _Finite = Field(description="The baseline's standard error.")
    significant: bool = Field(
        description="The peak stands above the baseline by more than 3 standard errors."
    )
    censored: bool = Field(description="χ is largest at the first or last checkpoint.")
    in_window: bool | None = Field(description="Inside its transition's window (null: no transition).")
    transition_step: _Finite = Field(description="That transition's step (null: none).")
    reason: str = Field(description="Why the peak is or is not significant.")
    method: str = Field(description="How the interval was made.")


class ExponentFit(_Body):
    """A critical exponent b on one side of a transition (``phasescope.phases.exponents``)."""

    quantity: str
    layer: int | None
    head: int | None
    side: Literal["before", "after"]
    b: _Finite = Field(description="|m − m(t*)| ∝ |ln t − ln t*|^b (null: under two points).")
    b_ci_lo: _Finite = Field(description="Lower end of b's 95% bootstrap interval.")
    b_ci_hi: _Finite = Field(description="Upper end of that interval.")
    n_points: int = Field(description="Checkpoints in the side's window.")
    supported: bool = Field(description="Enough checkpoints over a wide enough range, and R² high enough.")
    reason: str = Field(description="What the fit rests on, or which criterion failed.")
    r2: _Finite = Field(description="R² of the log–log line.")
    d_min: float = Field(description="The window's inner edge, |ln t − ln t*|.")
    d_max: float = Field(description="Its outer edge.")
    t_star: float = Field(description="The transition's step t*.")
    m_star: float = Field(description="m(t*), the fitted step's value there.")
    method: str = Field(description="How the interval was made.")


class Findings(_Body):
    """Where the model changes phase: computed once when the analysis finishes (docs/measures.md)."""

    transitions: list[Transition] = Field(description="Every transition found, by step.")
    groups: list[list[int]] = Field(description="Transitions that move together (indices).")
    susceptibility: list[SusceptibilityPeak] = Field(
        default_factory=list, description="χ peaks of the order parameters with susceptibility rows."
    )
    exponents: list[ExponentFit] = Field(
        default_factory=list, description="Critical exponents on each side of every located step."
    )
    summary: str = Field(description="One sentence per group, or why there is nothing to report.")
    checkpoints: int = Field(description="Checkpoints after step 0 the detection read.")
    marked: int | None = Field(
        None,
        description="The transition the dashboard marks (index into transitions): the first one of "
        "the loss, else the earliest; null when there is none.",
    )


class ModelShape(_Body):
    """The measured model's dimensions, as far as they are known (null: not known)."""

    n_layers: int | None = Field(description="Transformer blocks.")
    n_heads: int | None = Field(description="Attention heads per block.")
    d_model: int | None = Field(None, description="Width of the residual stream.")
    d_head: int | None = Field(None, description="Width of one head.")
    n_ctx: int | None = Field(None, description="Longest context (tokens).")
    d_vocab: int | None = Field(None, description="Vocabulary size.")


class AnalysisSummary(_Body):
    """An analysis as listed: its state, progress, findings and shape, without the request."""

    id: str = Field(description="24 hex digits: hashes the request and the weights it reads.")
    model: str
    measures: list[str]
    status: AnalysisState = Field(
        description="queued, running, finished, partial (some checkpoints failed or were "
        "cancelled), failed (none succeeded) or cancelled."
    )
    progress: Progress
    timings: Timings
    errors: list[FailedJob] = Field(description="Checkpoints whose job failed.")
    rows: int | None = Field(description="Rows of the merged table (null until finished).")
    findings: Findings | None = Field(description="Transitions found (null until finished).")
    shape: ModelShape | None = Field(description="The model's dimensions (null until known).")
    queue_reachable: bool | None = Field(
        description="Whether Redis answered this read (null: not asked, the analysis is finished)."
    )
    links: Links


class AnalysisStatus(AnalysisSummary):
    """One analysis: everything in the listing plus its request, checkpoints and their weights."""

    checkpoints: list[int] = Field(description="The selected training steps, ascending.")
    request: dict[str, Any] = Field(description="The canonical request (POST /analyses's body).")
    weights: dict[str, str] = Field(description="The identity of each checkpoint's weights, by step.")


class AnalysisList(_Body):
    """A page of analyses, most recently touched first."""

    items: list[AnalysisSummary]
    offset: int
    limit: int
    total: int
    next: str | None = Field(description="The next page's path (null: this is the last page).")


class ResultsPage(_Body):
    """The tidy table as columnar JSON: ``data[column]`` is that column's values, row by row."""

    id: str
    complete: bool = Field(description="False while the analysis runs: more rows will come.")
    rows: int
    columns: list[str] = Field(description="measure, checkpoint, layer, head, quantity, value, coordinates.")
    data: dict[str, list[Any]] = Field(description="One list per column, each of length rows.")


class ModelEntry(_Body):
    """A model the server can analyse, listed without loading weights."""

    model: str = Field(description="The model string to submit, e.g. zoo:induction-2l.")
    kind: str = Field(description="zoo, tl, hub, series, hf or hf_series.")
    description: str
    available: bool = Field(description="False for a zoo series not trained yet.")
    n_checkpoints: int | None
    details: dict[str, Any]


class ModelList(_Body):
    """The models under the model roots, the zoo, and TransformerLens's names."""

    models: list[ModelEntry]
    transformer_lens: list[str] | None = Field(None, description="tl: names (when include_tl).")


class CheckpointList(_Body):
    """The training steps of one model."""

    model: str
    kind: str
    n_checkpoints: int
    checkpoints: list[int]


class PatternIndex(_Body):
    """Which attention patterns an analysis kept (zeros and empty lists when none)."""

    id: str
    checkpoints: list[int]
    n_layers: int
    n_heads: int
    n_prompts: int
    seq: int | None = Field(None, description="Tokens kept per prompt.")


class PatternMatrix(_Body):
    """One attention pattern: ``pattern[q][k]`` is the attention of query q to key k."""

    id: str
    checkpoint: int
    layer: int
    head: int
    prompt: int
    tokens: list[str]
    pattern: list[list[float]]


class Health(_Body):
    """Redis, workers, the queue, the store and the supervisor (``phasescope up``)."""

    status: Literal["ok", "degraded", "unavailable"]
    redis: dict[str, Any] = Field(description="ok, mode (embedded or external), detail when not ok.")
    store: dict[str, Any] = Field(description="ok, low_space, free_mb, min_free_mb, detail.")
    workers: list[dict[str, Any]] | None = Field(None, description="name, state, heartbeat_age_s, alive.")
    workers_alive: int | None = None
    queue: dict[str, Any] | None = Field(None, description="name, queued, started, failed.")
    supervisor: dict[str, Any] | None = Field(None, description="The children of phasescope up.")


class Readiness(_Body):
    """Whether the API can serve (Redis and the store usable)."""

    ready: bool
    status: Literal["ok", "degraded", "unavailable"]


class EnsembleSeed(_Body):
    """One analysis (one seed) of an ensemble: its transition of the order parameter.

    docs/measures.md ("Seed ensembles") defines each number.
    """

    id: str = Field(description="The analysis id.")
    model: str = Field(description="Its model string, e.g. zoo:induction-2l-seed3.")
    head: int | None = Field(description="For a per-head quantity: the head with the largest change.")
    detected: bool = Field(description="Whether its findings report a transition of this series.")
    step: _Finite = Field(description="The transition step (findings); null when none.")
    step_sd: _Finite = Field(description="Its standard deviation (steps).")
    step_ci_lo: _Finite = Field(description="Lower end of its 95% interval (steps).")
    step_ci_hi: _Finite = Field(description="Upper end of its 95% interval (steps).")
    uncertainty_method: str
    t_star: _Finite = Field(description="Centre of the collapse fit, exp(x0) (steps).")
    width: _Finite = Field(description="Width w of the collapse fit, in ln t.")
    before: _Finite = Field(description="Fitted level before the transition.")
    after: _Finite = Field(description="Fitted level after it.")
    reason: str = Field(description="Why there is no step, when there is none.")


class EnsembleLayer(_Body):
    """One layer (or the model, for a quantity without layers) across the ensemble."""

    layer: int | None
    seeds: list[EnsembleSeed]
    n_detected: int
    step_mean: _Finite
    step_sd: _Finite = Field(description="SD of the steps across seeds (ddof 1).")
    step_min: _Finite
    step_max: _Finite
    rms_uncertainty: _Finite = Field(description="RMS of the per-seed standard deviations.")
    spread_ratio: _Finite = Field(
        description="step_sd / rms_uncertainty: near 1, the errors explain the spread."
    )
    collapse_quality: _Finite = Field(
        description="Q: RMS spread of the collapsed curves on the common u grid."
    )
    uncollapsed_quality: _Finite = Field(description="The same for the curves in ln t.")
    collapse_gain: _Finite = Field(description="uncollapsed_quality / collapse_quality.")
    u_range: list[float] | None = Field(description="The u range Q is computed on.")
    points: dict[str, list[Any]] = Field(
        description="Collapse points, columnar: id, checkpoint, value, ln_t, u, m_norm (seeds with a transition)."
    )


class EnsembleResponse(_Body):
    """An order parameter across 2–16 analyses (seeds): per-seed steps, their spread, the collapse."""

    quantity: str = Field(description="The order parameter, measure.quantity.")
    analyses: list[str]
    layers: list[EnsembleLayer]


def marked_transition(transitions: list[dict[str, Any]]) -> int | None:
    """The index of the transition to mark: the first of the loss, else the earliest; None if none.

    ``transitions`` are sorted by step (``phasescope.phases.findings.find_transitions``).

    >>> marked_transition([{"quantity": "induction_score", "step": 300}, {"quantity": "loss", "step": 480}])
    1
    """
    for i, t in enumerate(transitions):
        if t.get("quantity") == "loss":
            return i
    return 0 if transitions else None
