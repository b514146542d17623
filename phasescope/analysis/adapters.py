"""From a checkpoint to each measure's table: the compute functions the measure registry names.

Each built-in entry of ``phasescope.measures.registry`` names one function here
(``Measure.compute = "phasescope.analysis.adapters:<name>"``). ``phasescope.analysis.run`` prepares
what a kind of measure reads (one forward pass with hooks for the ``activation`` kind, the first
``heavy_prompts`` prompts for the ``landscape`` kind) into a ``MeasureInput`` and calls the function
of every requested measure of that kind with it. A function reads what it needs from the input and
calls the pure measure (``phasescope.measures.<name>``) with the request's parameters; it returns
the measure's tidy table (``phasescope.measures.tables``).

A measure of your own is one such function (anywhere importable) plus one ``register_measure`` call;
docs/architecture.md, "Adding a measure", walks through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor

from phasescope.analysis.inputs import Batch, repeated_random_tokens
from phasescope.errors import MeasureError
from phasescope.models.loading import LoadedModel
from phasescope.schemas import InputSpec, MeasureParams

if TYPE_CHECKING:
    from phasescope.analysis.adapters_dynamics import Neighbours, SeriesReader

__all__ = [
    "MeasureInput",
    "energies",
    "entropy",
    "heads",
    "landscape",
    "llc",
    "loss",
    "sharpness",
    "spectra",
    "thermo",
]


@dataclass
class MeasureInput:
    """What a measure of one checkpoint reads.

    Attributes:
        loaded: the model at the checkpoint.
        batch: the prompts, on the model's device (the landscape kind: the first ``heavy_prompts``).
        inputs: the request's inputs.
        params: the request's measure parameters.
        scores: ``[layer, batch, head, query, key]`` pre-softmax attention scores in float64 (the
            activation kind; None otherwise), −inf at masked keys.
        logits: ``[batch, seq, vocab]`` (activation measures with ``reads_logits``; else None).
        activations: what the forward pass's extra hooks captured (activation measures with
            ``Measure.hooks``), by full hook name, e.g. ``activations["blocks.0.hook_resid_pre"]``
            ``[batch, seq, d_model]`` in float64; only the layers that have the hook.
        other: a second checkpoint of the same series (the landscape's interpolation line), or None.
        neighbours: the cross-checkpoint kind: the parameters of the analysis's previous and first
            checkpoints (``phasescope.analysis.adapters_dynamics.Neighbours``), or None.
        series: the series kind: every analysed checkpoint's parameters
            (``phasescope.analysis.adapters_dynamics.SeriesReader``), or None.
    """

    loaded: LoadedModel
    batch: Batch
    inputs: InputSpec
    params: MeasureParams
    scores: Tensor | None = None
    logits: Tensor | None = None
    other: LoadedModel | None = None
    activations: dict[str, Tensor] = field(default_factory=dict)
    neighbours: Neighbours | None = None
    series: SeriesReader | None = None
    _patterns: Tensor | None = field(default=None, repr=False)

    @property
    def step(self) -> int:
        """The checkpoint's training step."""
        return self.loaded.step

    @property
    def patterns(self) -> Tensor:
        """``softmax(scores)`` in float64, ``[layer, batch, head, query, key]``; computed once, shared."""
        if self._patterns is None:
            assert self.scores is not None, "patterns are read from an activation measure's scores"
            self._patterns = torch.softmax(self.scores.double(), dim=-1)
        return self._patterns

    def require_lm_head(self, what: str) -> None:
        """Refuse a measure that needs the model's loss when the model has no language-model head."""
        if not self.loaded.has_lm_head:
            raise MeasureError(
                f"{self.loaded.ref.spec} has no language-model head, so it has no {what}",
                field="measures",
                model=self.loaded.ref.spec,
            )


def _scores(data: MeasureInput) -> Tensor:
    assert data.scores is not None, "an activation measure is called with the forward pass's scores"
    return data.scores


def loss(data: MeasureInput) -> pd.DataFrame:
    """Next-token loss and accuracy, per split (``phasescope.measures.loss``)."""
    from phasescope.measures.loss import loss_table

    data.require_lm_head("loss: drop 'loss' from the measures")
    assert data.logits is not None, "the loss entry has reads_logits"
    b = data.batch
    return loss_table(data.logits, b.tokens, b.target_mask, b.splits, data.step)


def entropy(data: MeasureInput) -> pd.DataFrame:
    """Attention entropy per head and position (``phasescope.measures.entropy``)."""
    from phasescope.measures.entropy import entropy_table

    return entropy_table(_scores(data), data.step)


def thermo(data: MeasureInput) -> pd.DataFrame:
    """The β sweep of every head (``phasescope.measures.thermo``)."""
    from phasescope.measures.thermo import beta_grid, thermo_table

    scores, p = _scores(data), data.params
    betas = beta_grid(p.beta_min, p.beta_max, p.n_beta).to(scores.device)
    return thermo_table(scores, data.step, betas)


def spectra(data: MeasureInput) -> pd.DataFrame:
    """Attention, QK/OV and weight spectra (``phasescope.measures.spectra``)."""
    from phasescope.analysis.run import model_weights
    from phasescope.measures.spectra import spectra_table

    # Grouped-query attention: W_K/W_V ESDs count each key/value head once (measures/spectra.py).
    n_kv = getattr(data.loaded.model.cfg, "n_key_value_heads", None)
    weights = model_weights(data.loaded.model)
    return spectra_table(data.patterns, weights, data.step, n_key_value_heads=n_kv)


def energies(data: MeasureInput) -> pd.DataFrame:
    """Histograms of attention energies (``phasescope.measures.energies``)."""
    from phasescope.measures.energies import energy_table

    return energy_table(_scores(data), data.step, n_bins=data.params.energy_bins)


def heads(data: MeasureInput) -> pd.DataFrame:
    """Induction/previous-token scores, on the batch itself when it is a repeat, else on a probe."""
    from phasescope.analysis.run import DEFAULT_TEXT_PROMPTS, capture_attention, text_frame
    from phasescope.measures.heads import heads_table
    from phasescope.measures.tables import empty_table

    loaded, batch, inputs = data.loaded, data.batch, data.inputs
    if batch.period is not None and loaded.causal:
        return heads_table(data.patterns, batch.period, loaded.step)
    n_ctx = int(loaded.model.cfg.n_ctx)
    if not loaded.causal or n_ctx < 8:
        # Induction needs a causal model and room for a repeated block; say so with an empty table.
        return empty_table()
    half = min(max(inputs.seq_len // 2, 4), (n_ctx - 1) // 2)
    prefix = None
    if loaded.tokenizer is not None:
        # The probe starts as the text prompts do: with the family's BOS (raw style: BOS, else EOS).
        frame = text_frame(loaded, inputs)
        prefix = frame.separator if frame.style == "raw" else (frame.prefix[0] if frame.prefix else None)
    probe = repeated_random_tokens(
        min(inputs.n_prompts or DEFAULT_TEXT_PROMPTS, 32),
        half,
        int(loaded.model.cfg.d_vocab),
        inputs.seed,
        prefix,
    ).to(batch.tokens.device)
    _, probe_scores = capture_attention(loaded.model, probe.tokens, want_logits=False)
    pats = torch.softmax(probe_scores.double(), dim=-1)
    return heads_table(pats, half, loaded.step, offset=0 if prefix is None else 1)


def landscape(data: MeasureInput) -> pd.DataFrame:
    """The loss on a line or plane of directions, and to ``other`` (``phasescope.measures.landscape``)."""
    from phasescope.measures.landscape import landscape_table, model_params

    data.require_lm_head("loss landscape")
    model, p = data.loaded.model, data.params
    other = None
    if data.other is not None:
        other = {k: v.detach().clone() for k, v in model_params(data.other.model).items()}
    return landscape_table(
        model,
        data.batch,
        data.step,
        other=other,
        n_dims=p.landscape_dims,
        n_points=p.landscape_points,
        radius=p.landscape_radius,
        seed=p.landscape_seed,
        # vmap over grid points pays off on a GPU; on CPU the plain loop measured 1.7-3x faster
        # (docs/benchmarks.md, benchmark 5). Same numbers either way.
        batched=next(model.parameters()).device.type != "cpu",
    )


def sharpness(data: MeasureInput) -> pd.DataFrame:
    """Top Hessian eigenvalues and trace (``phasescope.measures.sharpness``)."""
    from phasescope.measures.sharpness import sharpness_table

    data.require_lm_head("loss landscape")
    p = data.params
    return sharpness_table(
        data.loaded.model,
        data.batch,
        data.step,
        k=p.sharpness_k,
        method=p.sharpness_method,
        n_trace=p.hutchinson_samples,
        seed=p.landscape_seed,
    )


def llc(data: MeasureInput) -> pd.DataFrame:
    """The local learning coefficient (``phasescope.measures.llc``).

    The sampler settings are the request's ``llc_*`` parameters, stored with the request.
    """
    from phasescope.measures.llc import llc_table

    data.require_lm_head("loss landscape")
    p = data.params
    return llc_table(
        data.loaded.model,
        data.batch,
        data.step,
        lr=p.llc_lr,
        localization=p.llc_localization,
        num_chains=p.llc_chains,
        num_draws=p.llc_draws,
        seed=p.landscape_seed,
    )
