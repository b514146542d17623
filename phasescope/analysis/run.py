"""Measure one checkpoint: one forward pass with hooks, then the pure measures on what it captured.

This is the worker path and the CLI path alike (``phasescope analyze`` loops it over checkpoints in
one process; RQ workers run it once per job). Only the pre-softmax scores are captured, never a full
activation cache: patterns are their softmax, computed once in float64. A measure that reads more
(the residual stream, MLP pre-activations) names its hooks in its registry entry, and the same pass
captures those too, only when such a measure is requested.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from phasescope.analysis.inputs import Batch, repeated_random_tokens
from phasescope.analysis.prompts import PromptFrame, prompt_frame, text_prompts
from phasescope.errors import InvalidRequest, MeasureError
from phasescope.measures.registry import Measure, get_measure
from phasescope.measures.tables import concat_tables
from phasescope.models.loading import LoadedModel
from phasescope.schemas import InputSpec, MeasureParams

if TYPE_CHECKING:
    from phasescope.analysis.adapters_dynamics import Neighbours, SeriesReader

__all__ = [
    "Capture",
    "build_batch",
    "capture_attention",
    "capture_forward",
    "extra_hook_names",
    "measure_checkpoint",
    "measure_landscape",
    "measure_series",
    "model_weights",
    "pick_device",
    "run_local",
    "text_frame",
]

DEFAULT_TEXT_PROMPTS = 16
DEFAULT_INDUCTION_PROMPTS = 64


def pick_device(setting: str = "auto") -> str:
    """'auto' → cuda when a GPU is visible, else cpu; anything else is taken as given."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _n_ctx(loaded: LoadedModel) -> int:
    return int(loaded.model.cfg.n_ctx)


def build_batch(loaded: LoadedModel, inputs: InputSpec) -> Batch:
    """The prompts a checkpoint is measured on.

    Zoo series use their task's own evaluation data (first ``n_prompts`` of it when given). Language
    models use the texts (or ``phasescope.analysis.texts.BUILTIN_TEXTS``), tokenised, joined and cut into
    ``n_prompts`` prompts of exactly ``seq_len`` tokens so that nothing is padded, each framed as
    ``inputs.prompt_style`` says (``phasescope.analysis.prompts``: BOS first for decoders that prepend one,
    ``[CLS] ... [SEP]`` for encoders). A model without a tokenizer is measured on repeated random token
    blocks.
    """
    if loaded.task and inputs.texts is None:
        from phasescope.zoo import eval_batch
        from phasescope.zoo.tasks import INDUCTION

        n = inputs.n_prompts
        if n is None and loaded.task.get("name") == INDUCTION:
            # 64 repeated blocks give every head 64 × 31 rows: per-head averages settle to well under
            # 1%, at a quarter of the cost of the whole 256-sequence eval set. Modular addition keeps
            # every pair: its train/test accuracies need them all.
            n = DEFAULT_INDUCTION_PROMPTS
        return eval_batch(loaded.task, n=n, seed=None)
    n_prompts = inputs.n_prompts or DEFAULT_TEXT_PROMPTS
    seq_len = min(inputs.seq_len, _n_ctx(loaded))
    vocab = int(loaded.model.cfg.d_vocab)
    if loaded.tokenizer is None:
        if inputs.texts is not None:
            raise InvalidRequest(
                f"{loaded.ref.spec} has no tokenizer, so it cannot read texts; leave texts empty to measure "
                "it on random token blocks",
                field="inputs.texts",
            )
        return repeated_random_tokens(n_prompts, seq_len // 2, vocab, inputs.seed)
    from phasescope.analysis.texts import BUILTIN_TEXTS

    texts = inputs.texts if inputs.texts is not None else BUILTIN_TEXTS
    tokens, description = text_prompts(
        loaded.tokenizer, texts, text_frame(loaded, inputs), n_prompts, seq_len, inputs.seed
    )
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return Batch(tokens, mask, description=description)


def text_frame(loaded: LoadedModel, inputs: InputSpec) -> PromptFrame:
    """How this model's text prompts are framed (``phasescope.analysis.prompts``)."""
    return prompt_frame(
        loaded.tokenizer,
        causal=loaded.causal,
        # What TransformerLens's own to_tokens does for this model (False for GPT-NeoX, Qwen, Phi, ...).
        prepend_bos=bool(getattr(loaded.model.cfg, "default_prepend_bos", True)),
        style=inputs.prompt_style,
    )


def _scores_hook_names(model: Any) -> list[str]:
    n_layers = int(model.cfg.n_layers)
    names = [f"blocks.{i}.attn.hook_attn_scores" for i in range(n_layers)]
    if not all(n in model.hook_dict for n in names):
        from phasescope.models.hf import attention_hook_names

        names = list(attention_hook_names(model)[0])
    return names


# Hooks that only fire in a block with an MLP: an attention-only block has some of them in its
# hook_dict (hook_mlp_out, hook_mlp_in) but never calls them, and a pass waiting for them would
# never stop early.
_MLP_HOOKS = ("hook_resid_mid", "hook_mlp_in", "hook_mlp_out", "mlp.")


def extra_hook_names(model: Any, suffixes: Iterable[str]) -> list[str]:
    """The full names ``blocks.<layer>.<suffix>`` of ``suffixes`` that fire in ``model``'s pass.

    Layers without the hook (an attention-only block has no MLP hooks, a decoder block no
    ``hook_normalized_resid_post``) are left out, so a measure reads only what exists.
    """
    cfg = model.cfg
    names = []
    for suffix in dict.fromkeys(suffixes):
        if getattr(cfg, "attn_only", False) and suffix.startswith(_MLP_HOOKS):
            continue
        names.extend(
            name
            for layer in range(int(cfg.n_layers))
            if (name := f"blocks.{layer}.{suffix}") in model.hook_dict
        )
    return names


@dataclass
class Capture:
    """What one forward pass with hooks kept (``capture_forward``).

    Attributes:
        logits: ``[batch, seq, vocab]``, or None when not wanted.
        scores: ``[layer, batch, head, query, key]`` pre-softmax scores.
        activations: the extra hooks' tensors by full hook name (``extra_hook_names``).
    """

    logits: Tensor | None
    scores: Tensor
    activations: dict[str, Tensor] = field(default_factory=dict)


@torch.inference_mode()
def capture_forward(
    model: Any,
    tokens: Tensor,
    want_logits: bool = True,
    dtype: torch.dtype | None = None,
    hooks: Iterable[str] = (),
) -> Capture:
    """Run the model once, keeping the pre-softmax attention scores and the named extra hooks.

    Args:
        model: a HookedTransformer or HookedEncoder.
        tokens: ``[batch, seq]`` token ids on the model's device.
        want_logits: also return the logits (the loss measure needs them).
        dtype: cast each captured tensor to this type as it is captured (float64 for the measures: a
            bfloat16 model's numbers are then exact float64 numbers, and no full low-precision copy is
            kept); None keeps the model's own type.
        hooks: TransformerLens hook suffixes to keep on every layer that has them (``Measure.hooks``,
            e.g. ``"hook_resid_pre"``, ``"mlp.hook_pre"``); none by default, so the default measures
            pay for no copy they do not read.

    Returns:
        The logits (or None), the scores as the model computed them (its own 1/sqrt(d_head) scale,
        −inf at masked keys) and the extra activations.
    """
    names = _scores_hook_names(model)
    extra = extra_hook_names(model, hooks)
    wanted = len(set(names) | set(extra))
    captured: dict[str, Tensor] = {}

    def keep(tensor: Tensor, hook: Any) -> None:
        captured[hook.name] = tensor.detach() if dtype is None else tensor.detach().to(dtype)
        if not want_logits and len(captured) == wanted:
            # Without logits the rest of the pass (for scores only: the last layer's attention output
            # and MLP, about 7% of a 12-layer model's forward) computes nothing we keep.
            raise _ScoresCaptured

    logits = None
    try:
        with model.hooks(fwd_hooks=[(n, keep) for n in dict.fromkeys(names + extra)]):
            # return_type "loss"/None would skip the unembed; we need logits only for the loss measure.
            logits = model(tokens, return_type="logits" if want_logits else None)
    except _ScoresCaptured:
        pass
    scores = torch.stack([captured[n] for n in names])
    return Capture(logits, scores, {n: captured[n] for n in extra if n in captured})


def capture_attention(
    model: Any, tokens: Tensor, want_logits: bool = True, dtype: torch.dtype | None = None
) -> tuple[Tensor | None, Tensor]:
    """Run the model once, keeping only the pre-softmax attention scores (``capture_forward``).

    Returns:
        ``(logits [batch seq vocab] or None, scores [layer batch head query key])``.
    """
    capture = capture_forward(model, tokens, want_logits=want_logits, dtype=dtype)
    return capture.logits, capture.scores


class _ScoresCaptured(Exception):
    """Raised by ``capture_forward``'s last hook to end a forward pass whose logits are not wanted."""


def model_weights(model: Any) -> dict[str, Tensor]:
    """The weight matrices whose spectra we report, in TransformerLens layout."""
    weights: dict[str, Tensor] = {}
    for name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_E", "W_pos", "W_U"):
        try:
            value = getattr(model, name)
        except (AttributeError, IndexError, KeyError, TypeError):
            continue
        if isinstance(value, Tensor) and value.ndim >= 2:
            weights[name] = value.detach()
    return weights


def measure_checkpoint(
    loaded: LoadedModel,
    measures: Iterable[str],
    inputs: InputSpec,
    params: MeasureParams | None = None,
    batch: Batch | None = None,
    other: LoadedModel | None = None,
    neighbours: Neighbours | None = None,
) -> pd.DataFrame:
    """Every requested measure on one checkpoint, as one tidy table.

    Each measure is dispatched through its registry entry (``phasescope.measures.registry``): the
    measures of one kind share what that kind reads (one forward pass, the heavy prompts), then each
    entry's compute function makes its table.

    Args:
        loaded: the model at the checkpoint.
        measures: registered measure names (``phasescope.measures.registry.measure_names``).
        inputs: what to measure on (ignored when ``batch`` is given).
        params: measure parameters.
        batch: prompts already built (a sweep builds them once).
        other: a second checkpoint for the landscape's interpolation line.
        neighbours: the parameters of the analysis's previous and first checkpoints, for the
            cross-checkpoint measures (``phasescope.analysis.adapters_dynamics``).

    Series measures (kind ``series``) are skipped here: they read every checkpoint at once and run
    after the per-checkpoint ones (``measure_series``).

    Raises:
        KeyError: a name that is not a registered measure.
    """
    entries = [get_measure(name) for name in dict.fromkeys(measures)]
    entries = [e for e in entries if e.kind != "series"]
    params = params or MeasureParams()
    device = next(loaded.model.parameters()).device
    batch = (batch or build_batch(loaded, inputs)).to(device)
    tables: list[pd.DataFrame] = []
    if any(e.kind == "activation" for e in entries):
        tables.append(_activation_measures(loaded, {e.name for e in entries}, inputs, params, batch))
    if any(e.kind == "landscape" for e in entries):
        tables.append(measure_landscape(loaded, [e.name for e in entries], params, batch, other=other))
    rest = [e for e in entries if e.kind in ("weights", "cross-checkpoint")]
    if rest:
        from phasescope.analysis.adapters import MeasureInput

        # Weights-only and cross-checkpoint measures read the model(s) and the prompts, no forward pass.
        data = MeasureInput(loaded, batch, inputs, params, other=other, neighbours=neighbours)
        tables.append(_compute(rest, data))
    return concat_tables(tables)


def measure_series(
    loaded: LoadedModel,
    measures: Iterable[str],
    params: MeasureParams,
    batch: Batch,
    reader: SeriesReader,
) -> pd.DataFrame:
    """The series measures (kind ``series``) of an analysis: computed once, from every checkpoint.

    Args:
        loaded: a model of the series (its architecture evaluates losses; its weights are not used).
        measures: requested measure names (the others are ignored).
        params: measure parameters.
        batch: the prompts; like the landscape kind, the first ``params.heavy_prompts`` are read.
        reader: every analysed checkpoint's parameters, opened (``SeriesReader`` in a with block).
    """
    from phasescope.analysis.adapters import MeasureInput
    from phasescope.measures.registry import measures as registered

    wanted = set(measures)
    entries = [e for e in registered(kind="series") if e.name in wanted]
    if not entries:
        return concat_tables([])
    device = next(loaded.model.parameters()).device
    first = _first(batch, params.heavy_prompts).to(device)
    return _compute(entries, MeasureInput(loaded, first, InputSpec(), params, series=reader))


def _compute(entries: Iterable[Measure], data: Any) -> pd.DataFrame:
    """Each entry's compute function on the same prepared input, as one table."""
    return concat_tables([entry.function()(data) for entry in entries])


def _activation_measures(
    loaded: LoadedModel, measures: set[str], inputs: InputSpec, params: MeasureParams, batch: Batch
) -> pd.DataFrame:
    """The measures read from one forward pass: its scores, patterns and logits."""
    from phasescope.analysis.adapters import MeasureInput
    from phasescope.measures.registry import measures as registered

    entries = [e for e in registered(kind="activation") if e.name in measures]
    # Scores (and any extra hooks) in float64 whatever the load dtype: the measures' identities hold
    # to float64 precision on them (docs/measures.md, "Precision").
    capture = capture_forward(
        loaded.model,
        batch.tokens,
        want_logits=any(e.reads_logits for e in entries),
        dtype=torch.float64,
        hooks=[hook for e in entries for hook in e.hooks],
    )
    data = MeasureInput(
        loaded,
        batch,
        inputs,
        params,
        scores=capture.scores,
        logits=capture.logits,
        activations=capture.activations,
    )
    return _compute(entries, data)


def measure_landscape(
    loaded: LoadedModel,
    measures: Iterable[str],
    params: MeasureParams,
    batch: Batch,
    other: LoadedModel | None = None,
) -> pd.DataFrame:
    """The loss-landscape measures (landscape, sharpness, llc: kind ``landscape``) of one checkpoint.

    They cost many forward and backward passes, so they run on the first ``params.heavy_prompts``
    prompts only. ``other`` (a second checkpoint of the same series) adds the loss along the straight
    line between the two.
    """
    from phasescope.analysis.adapters import MeasureInput
    from phasescope.measures.registry import measures as registered

    wanted = set(measures)
    if not loaded.has_lm_head:
        raise MeasureError(
            f"{loaded.ref.spec} has no language-model head, so it has no loss landscape", field="measures"
        )
    entries = [e for e in registered(kind="landscape") if e.name in wanted]
    # The inputs are not read by the landscape kind (the prompts are already built).
    data = MeasureInput(loaded, _first(batch, params.heavy_prompts), InputSpec(), params, other=other)
    return _compute(entries, data)


def _first(batch: Batch, n: int) -> Batch:
    """The first ``n`` prompts of a batch (with their split masks)."""
    if batch.tokens.shape[0] <= n:
        return batch
    return Batch(
        batch.tokens[:n],
        batch.target_mask[:n],
        {k: v[:n] for k, v in batch.splits.items()},
        period=batch.period,
        description=f"first {n} of: {batch.description}",
    )


ProgressFn = Callable[[int, int, int], None]


def run_local(
    model: str,
    steps: list[int],
    measures: Iterable[str],
    inputs: InputSpec,
    params: MeasureParams | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    dtype: str = "auto",
    prefetch: bool | None = None,
) -> tuple[pd.DataFrame, dict[int, float]]:
    """Measure ``steps`` of ``model`` in this process, reusing the architecture between checkpoints.

    ``dtype`` is what the weights load in (``AnalysisRequest.dtype``); the measures compute in float64
    whatever it is. With ``prefetch`` (None: ``Settings.prefetch_checkpoints``) the next step's
    weights are read in a background thread while this one is measured (``phasescope.models.prefetch``);
    the results are the same either way.

    Returns:
        The concatenated table and the wall seconds spent per checkpoint.
    """
    from phasescope.config import get_settings
    from phasescope.models.loading import ModelCache

    if prefetch is None:
        prefetch = get_settings().prefetch_checkpoints
    measures = list(dict.fromkeys(measures))
    kinds = {get_measure(m).kind for m in measures}
    if kinds & {"cross-checkpoint", "series"}:
        steps = sorted(steps)  # a trajectory runs forward in training time
    cache = ModelCache(device=device, prefetch=prefetch)
    tables, timings = [], {}
    batch = None
    loaded = None
    # The parameters of the first and of the last two measured steps, for the cross-checkpoint kind:
    # kept from the loop, never read again (docs/measures.md, "Training dynamics").
    first: tuple[int, dict[str, Tensor]] | None = None
    recent: list[tuple[int, dict[str, Tensor]]] = []
    try:
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            loaded = cache.get(model, step, dtype=dtype)
            if i + 1 < len(steps):
                cache.prefetch(model, steps[i + 1])  # read while this step is measured
            # The prompts do not depend on the weights: build them once per sweep.
            batch = batch or build_batch(loaded, inputs)
            neighbours = None
            if "cross-checkpoint" in kinds:
                from phasescope.analysis.adapters_dynamics import Neighbours, parameters

                current = (step, parameters(loaded.model))
                neighbours = Neighbours(
                    prev=recent[-1] if recent else None,
                    prevprev=recent[-2] if len(recent) >= 2 else None,
                    init=first or current,
                )
                first, recent = first or current, [*recent, current][-2:]
            tables.append(
                measure_checkpoint(loaded, measures, inputs, params, batch=batch, neighbours=neighbours)
            )
            timings[step] = time.perf_counter() - t0
            if progress:
                progress(i + 1, len(steps), step)
        if "series" in kinds and loaded is not None and batch is not None:
            from phasescope.analysis.adapters_dynamics import SeriesReader

            with SeriesReader(model, list(steps), loaded.model) as reader:
                tables.append(measure_series(loaded, measures, params or MeasureParams(), batch, reader))
    finally:
        cache.close()
    return concat_tables(tables), timings
