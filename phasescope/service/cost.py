"""What an analysis will cost, in work units, before anything runs: the ceiling at POST and the job timeout.

One **work unit** is one forward pass of 1,024 tokens (16 prompts × 64 tokens, the default inputs)
through the model being measured. Units do not depend on the model's size: a unit of pythia-1b takes
longer than a unit of a zoo model, and ``Settings.job_timeout_per_unit_s`` is the seconds allowed for
one unit on the slowest hardware the deployment expects.

With ``P`` prompts of ``T`` tokens (``P = n_prompts``, or 16 for text inputs and 64 for ``zoo:``
models, whose tasks bring their own prompts) and ``h = min(heavy_prompts, P)`` prompts for the
landscape measures::

    tok   = P·T / 1024                  forward passes' worth of tokens
    att   = tok · T / 64                attention score elements, relative to 16 × 64² per head
    heavy = h·T / 1024                  one forward pass over the landscape prompts
    hvp   = 6 · heavy                   one Hessian-vector product (measured: 4–8 forward passes)

Units per checkpoint (one job), the sum over the requested measures plus reading the texts. Each
measure's formula is its registry entry's ``cost`` (``phasescope.measures.builtin``), written in
``phasescope.measures.registry.WorkSizes``:

=============  ==========================================================================
texts          total characters / 250,000 (tokenising; 0 for the built-in texts)
any measure    tok (the one forward pass with hooks they share)
of kind
activation
entropy        0.5 · att
thermo         3 · att · n_beta / 61
spectra        att · T / 64 (SVD of every T×T pattern) + 1 (weight matrices)
heads          0.5 · att + min(P, 32)·T / 1024 (the repeated-token probe)
loss           0.5 · tok
energies       att
landscape      landscape_points ^ landscape_dims · heavy
sharpness      hvp · (k + n_eig + hutchinson_samples), n_eig = max(2k + 1, 20) + 4k (lanczos)
               or 25k (power), k = sharpness_k
llc            heavy · (1 + 3 · llc_chains · llc_draws)  (an SGLD step: forward and backward)
hessian_       hvp · (slq_steps · slq_probes + 1)  (Lanczos steps of every probe, the gradient graph)
density
head_llc       heavy · head_llc_max_heads · (1 + 3 · head_llc_chains · head_llc_draws)  (llc once per
               head; measured: a head's run is 0.7–1.05× its share)
trajectory     0.1 (reads up to three more checkpoints' weights; no forward pass)
trajectory_pca (landscape_points² + 2) · heavy: the plane's grid and two losses per checkpoint, once
               per analysis in its series job, priced per checkpoint as an upper bound
=============  ==========================================================================

An analysis costs its per-checkpoint units times its number of checkpoints. Every field of
``InputSpec`` and ``MeasureParams`` (and every top-level request field other than ``model``,
``checkpoints`` and ``measures``) is either a driver of the cost (``drivers()``: the inputs' sizes,
and each measure's ``cost_params``) or listed with the reason it costs nothing (``FREE``); a test
fails when a new field is in neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from phasescope.config import Settings, get_settings
from phasescope.errors import InvalidRequest
from phasescope.measures.registry import WorkSizes, get_measure, measure_names, measures
from phasescope.schemas import AnalysisRequest, InputSpec, MeasureParams

__all__ = [
    "Estimate",
    "FREE",
    "check_request",
    "drivers",
    "estimate",
    "job_timeout_s",
]

DEFAULT_TEXT_PROMPTS = 16  # phasescope.analysis.run.DEFAULT_TEXT_PROMPTS (not imported: it imports torch)
DEFAULT_ZOO_PROMPTS = 64  # phasescope.analysis.run.DEFAULT_INDUCTION_PROMPTS
TEXT_CHARS_PER_UNIT = 250_000  # a fast tokenizer reads ~1M characters a second; a unit is ~0.1-1 s
# The inputs' sizes drive the cost of every measure; each measure's own drivers are its cost_params.
_INPUT_DRIVERS = ("inputs.texts", "inputs.n_prompts", "inputs.seq_len")


def drivers() -> dict[str, tuple[str, ...]]:
    """The fields each measure's cost grows with (``section.field`` → measures); the rest are in FREE."""
    out: dict[str, tuple[str, ...]] = dict.fromkeys(_INPUT_DRIVERS, measure_names())
    for entry in measures():
        for name in entry.cost_params:
            out[f"params.{name}"] = (*out.get(f"params.{name}", ()), entry.name)
    return out


# Fields that change what is computed but not how much, and why.
FREE: dict[str, str] = {
    "dtype": "the same operations in another precision; the units assume float32, the slowest choice",
    "inputs.seed": "chooses which prompts and probes, not how many",
    "inputs.prompt_style": "frames the same seq_len tokens per prompt differently",
    "params.beta_min": "moves the β grid; its size is n_beta",
    "params.beta_max": "moves the β grid; its size is n_beta",
    "params.energy_bins": "histogram bins: counting is linear in the energies, not the bins",
    "params.landscape_radius": "scales the grid; its size is landscape_points ^ landscape_dims",
    "params.landscape_seed": "chooses the random directions and start vectors",
    "params.llc_lr": "the SGLD step size; the step count is llc_chains · llc_draws",
    "params.llc_localization": "the SGLD pull; the step count is llc_chains · llc_draws",
}


@dataclass(frozen=True)
class Estimate:
    """The estimated work of one request.

    Attributes:
        per_checkpoint: work units of one job (one checkpoint), all measures included.
        checkpoints: number of checkpoints (jobs).
        by_measure: work units of one job by measure; ``"forward"`` is the shared forward pass and
            ``"texts"`` the tokenising.
    """

    per_checkpoint: float
    checkpoints: int
    by_measure: dict[str, float]

    @property
    def total(self) -> float:
        """Work units of the whole analysis."""
        return self.per_checkpoint * self.checkpoints


def _sizes(request: AnalysisRequest) -> WorkSizes:
    inputs = request.inputs
    default = DEFAULT_ZOO_PROMPTS if request.model.startswith("zoo:") else DEFAULT_TEXT_PROMPTS
    prompts = inputs.n_prompts or default
    return WorkSizes(prompts, inputs.seq_len, min(request.params.heavy_prompts, prompts))


def estimate(request: AnalysisRequest, n_checkpoints: int = 1) -> Estimate:
    """The work units of a request, per checkpoint and in all (formulas in the module docstring).

    Args:
        request: the validated request.
        n_checkpoints: how many checkpoints its selection resolved to.
    """
    sizes = _sizes(request)
    parts: dict[str, float] = {}
    if request.inputs.texts is not None:
        parts["texts"] = sum(len(t) for t in request.inputs.texts) / TEXT_CHARS_PER_UNIT
    entries = [get_measure(m) for m in request.measures]
    if any(e.kind == "activation" for e in entries):
        parts["forward"] = sizes.tok
    for entry in entries:
        parts[entry.name] = entry.cost(sizes, request.params)
    return Estimate(sum(parts.values()), n_checkpoints, parts)


def job_timeout_s(request: AnalysisRequest, settings: Settings | None = None) -> int:
    """Seconds one job of this request may run: a base (model load) plus a share per work unit, capped.

    ``job_timeout_base_s + job_timeout_per_unit_s × units per checkpoint``, at most
    ``job_timeout_max_s``.
    """
    settings = settings or get_settings()
    seconds = settings.job_timeout_base_s + settings.job_timeout_per_unit_s * estimate(request).per_checkpoint
    return int(min(settings.job_timeout_max_s, math.ceil(seconds)))


def _reset(request: AnalysisRequest, field: str) -> AnalysisRequest:
    """The request with one ``section.field`` back at its default."""
    section, name = field.split(".")
    model = {"inputs": InputSpec, "params": MeasureParams}[section]
    default = model.model_fields[name].get_default(call_default_factory=True)
    part = getattr(request, section).model_copy(update={name: default})
    return request.model_copy(update={section: part})


def _dominant(request: AnalysisRequest, n_checkpoints: int, per_job: bool) -> tuple[str, Any, float]:
    """The field whose default would save the most work: a parameter (or, for the whole analysis, the
    number of checkpoints) when one saves any; else the costliest measure (heavy at its defaults).

    Returns:
        ``(field, its value, units saved)``; the field is ``section.name``, ``measures`` or
        ``checkpoints``.
    """
    cost = estimate(request, n_checkpoints)
    now = cost.per_checkpoint if per_job else cost.total
    best: tuple[str, Any, float] = ("measures", request.measures, -1.0)
    for field in drivers():
        section, name = field.split(".")
        lighter = estimate(_reset(request, field), n_checkpoints)
        saved = now - (lighter.per_checkpoint if per_job else lighter.total)
        if saved > best[2]:
            best = (field, getattr(getattr(request, section), name), saved)
    if not per_job and n_checkpoints > 1:
        saved = cost.per_checkpoint * (n_checkpoints - 1)
        if saved > best[2]:
            best = ("checkpoints", n_checkpoints, saved)
    if best[2] <= 0:
        top = max(request.measures, key=lambda m: cost.by_measure.get(m, 0.0))
        best = ("measures", top, cost.by_measure.get(top, 0.0) * (1 if per_job else n_checkpoints))
    return best


def _advice(field: str, value: Any) -> str:
    if field == "measures":
        return f"the measure {value!r}: leave it out or lower its parameters"
    if field == "checkpoints":
        return f"the {value} checkpoints: select fewer (a range with 'every', or a spacing with 'count')"
    shown = f"{len(value)} texts" if field == "inputs.texts" else repr(value)
    return f"{field} ({shown}): lower it"


def check_request(request: AnalysisRequest, n_checkpoints: int, settings: Settings | None = None) -> Estimate:
    """Refuse a request whose estimated work is over the ceilings; returns the estimate when it is not.

    Raises:
        InvalidRequest: over ``max_job_units`` (one checkpoint) or ``max_analysis_units`` (all of
            them); the message and ``field`` name the parameter whose default would save the most.
    """
    settings = settings or get_settings()
    cost = estimate(request, n_checkpoints)
    for per_job, units, limit, name in (
        (True, cost.per_checkpoint, settings.max_job_units, "max_job_units"),
        (False, cost.total, settings.max_analysis_units, "max_analysis_units"),
    ):
        if units > limit:
            field, value, _ = _dominant(request, n_checkpoints, per_job)
            scope = "per checkpoint" if per_job else f"for {n_checkpoints} checkpoints"
            raise InvalidRequest(
                f"this analysis would take about {units:,.0f} work units {scope}, over the limit of "
                f"{limit:,.0f} ({name}; a unit is one forward pass of 16 × 64 tokens); most of it comes "
                f"from {_advice(field, value)}",
                field=field,
            )
    return cost
