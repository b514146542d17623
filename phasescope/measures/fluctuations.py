"""Fluctuations over prompts: standard errors, susceptibilities and their bootstrap.

A checkpoint is measured on a batch of prompts, and the prompts are the independent samples. An order
parameter ``m`` of one prompt is an average over that prompt's ``N_p`` *units* (its target tokens for
the loss and accuracy, its query rows for a head's scores); the value a measure reports is the pooled
average over every unit of the batch, i.e. the mean of the per-prompt values weighted by ``N_p``.
From the per-prompt values (docs/measures.md, "Uncertainties and susceptibility"):

- **standard error** of the pooled value (``se`` column of the quantity's own rows), the
  linearised standard error of a ratio of sums, ``se² = n/(n−1) · Σ_p N_p² (m_p − m̄)² / (Σ_p N_p)²``
  over the ``n`` prompts (``s/√n`` when every prompt has the same ``N``), and a 95% percentile
  interval of the pooled value from the bootstrap below (``ci_lo``, ``ci_hi``);
- **susceptibility** ``χ = N̄ · Var_p(m_p)``, ``Var`` over prompts with ``ddof = 1`` and ``N̄`` the mean
  unit count per prompt (quantity ``<q>_chi``): the fluctuation form. For units with variance σ² and
  no correlation within a prompt ``χ = σ²`` whatever ``N``; correlated units (a head that attends
  alike from every query of a prompt, a prompt the model has or has not "got") make it grow;
- **bootstrap** over prompts (``n_boot`` resamples with replacement, seeded): the standard error of
  ``χ`` (``se`` of the ``_chi`` rows, the resamples' standard deviation with ``ddof = 1``) and 95%
  percentile intervals of ``χ`` and of the pooled value.

Every resample is a row of multiplicities ``c_p`` (how often prompt ``p`` was drawn), so the sums of
all resamples are one matrix product of the per-prompt values with the multiplicities: no loop over
resamples or heads. A prompt whose value is NaN (no unit: a head with no row of two keys, a censored
β*) is left out of every sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from phasescope.measures.tables import tidy

__all__ = [
    "CI_LEVEL",
    "Fluctuations",
    "N_BOOT",
    "PROMPT_ROWS_PER_HEAD",
    "SEED",
    "fluctuation_frame",
    "fluctuation_tables",
    "fluctuations",
    "percentile_interval",
    "resample_counts",
    "tidy_with_spread",
]

N_BOOT = 200
"""Bootstrap resamples over prompts (the percentiles of 200 resamples move by about 1% of the interval)."""
CI_LEVEL = 0.95
"""Coverage of every interval in ``ci_lo``/``ci_hi``."""
SEED = 0
"""Seed of the prompt resamples: the same prompts give the same intervals in every run."""
PROMPT_ROWS_PER_HEAD = 256
"""Per-head quantities store ``_prompt`` rows for at most this many prompts (evenly spaced in the batch);
their ``_chi``, ``se`` and intervals always use every prompt. Grokking's 3481 rows × 4 heads would
otherwise be 14k rows per quantity and checkpoint."""


def resample_counts(
    n: int, n_boot: int = N_BOOT, seed: int = SEED, device: torch.device | str = "cpu"
) -> Tensor:
    """How often each of ``n`` prompts is drawn in each of ``n_boot`` bootstrap resamples.

    Args:
        n: prompts in the batch.
        n_boot: resamples.
        seed: seed of the draws (a CPU generator, so the counts are the same on any device).
        device: where the counts go.

    Returns:
        ``[n_boot, n]`` float64 multiplicities, each row summing to ``n``.
    """
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, max(n, 1), (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return counts.to(device)


def percentile_interval(samples: Tensor, level: float = CI_LEVEL) -> tuple[Tensor, Tensor]:
    """The central ``level`` percentile interval of ``samples`` along the last axis (NaNs ignored)."""
    tail = (1.0 - level) / 2.0
    q = torch.tensor([tail, 1.0 - tail], dtype=samples.dtype, device=samples.device)
    bounds = torch.nanquantile(samples, q, dim=-1)
    return bounds[0], bounds[1]


@dataclass
class Fluctuations:
    """The pooled value of an order parameter over prompts and its fluctuations; each tensor ``[...]``.

    Attributes:
        mean: ``Σ N_p m_p / Σ N_p``, the pooled value over every unit.
        se: its standard error over prompts.
        ci_lo: lower end of its 95% bootstrap percentile interval.
        ci_hi: upper end.
        chi: ``N̄ · Var_p(m_p)`` (``ddof = 1``).
        chi_se: the bootstrap standard error of ``chi``.
        chi_lo: lower end of the 95% bootstrap percentile interval of ``chi``.
        chi_hi: upper end.
        n_prompts: prompts with a value.
    """

    mean: Tensor
    se: Tensor
    ci_lo: Tensor
    ci_hi: Tensor
    chi: Tensor
    chi_se: Tensor
    chi_lo: Tensor
    chi_hi: Tensor
    n_prompts: Tensor


def fluctuations(
    values: Tensor,
    units: Tensor | float = 1.0,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    counts: Tensor | None = None,
) -> Fluctuations:
    """Pooled value, standard error, susceptibility and bootstrap intervals of per-prompt values.

    Args:
        values: ``[..., prompt]`` the order parameter of each prompt, ``m_p``; NaN where a prompt has
            none (it is left out).
        units: ``[..., prompt]`` (or broadcastable, or a number) the units ``N_p`` each value averages
            over: target tokens, query rows.
        n_boot: bootstrap resamples over prompts.
        seed: their seed.
        counts: ``[n_boot, prompt]`` multiplicities to use instead (``resample_counts``), so that
            several quantities of one batch share the same resamples.

    Returns:
        ``Fluctuations`` with tensors of shape ``values.shape[:-1]`` (float64). With fewer than two
        prompts the standard errors, ``chi`` and the intervals are NaN.

    >>> f = fluctuations(torch.tensor([1.0, 2.0, 3.0, 4.0]), units=10.0)
    >>> float(f.mean), round(float(f.se), 6), round(float(f.chi), 6)
    (2.5, 0.645497, 16.666667)
    """
    x = values.detach().to(torch.float64)
    n = x.shape[-1]
    u = torch.as_tensor(units, dtype=torch.float64, device=x.device).expand_as(x)
    valid = ~x.isnan()
    v = valid.to(torch.float64)
    x0 = torch.where(valid, x, 0.0)
    w = torch.where(valid, u, 0.0)  # N_p, 0 for a prompt without a value
    n_valid = v.sum(-1)
    total_units = w.sum(-1)
    mean = (w * x0).sum(-1) / total_units
    plain = x0.sum(-1) / n_valid  # the unweighted mean centres the variance sums (no cancellation)
    dev = torch.where(valid, x0 - plain.unsqueeze(-1), 0.0)
    var = (dev * dev).sum(-1) / (n_valid - 1)
    chi = total_units / n_valid * var
    resid = torch.where(valid, w * (x0 - mean.unsqueeze(-1)), 0.0)
    se = (n_valid / (n_valid - 1) * (resid * resid).sum(-1)).sqrt() / total_units

    if counts is None:
        counts = resample_counts(n, n_boot, seed, x.device)
    ct = counts.to(device=x.device, dtype=torch.float64).T  # [prompt, boot]
    # Each resample's sums: [..., boot].
    n_b = v @ ct
    units_b = w @ ct
    mean_b = (w * x0) @ ct / units_b
    s1, s2 = dev @ ct, (dev * dev) @ ct
    var_b = ((s2 - s1 * s1 / n_b) / (n_b - 1)).clamp_min(0.0)  # rounding must not make it negative
    chi_b = torch.where(n_b >= 2, units_b / n_b * var_b, torch.nan)
    ci_lo, ci_hi = percentile_interval(mean_b)
    chi_lo, chi_hi = percentile_interval(chi_b)
    chi_se = _nanstd(chi_b)
    few = n_valid < 2
    nan = torch.full_like(mean, torch.nan)
    return Fluctuations(
        mean=mean,
        se=torch.where(few, nan, se),
        ci_lo=torch.where(few, nan, ci_lo),
        ci_hi=torch.where(few, nan, ci_hi),
        chi=torch.where(few, nan, chi),
        chi_se=torch.where(few, nan, chi_se),
        chi_lo=torch.where(few, nan, chi_lo),
        chi_hi=torch.where(few, nan, chi_hi),
        n_prompts=n_valid,
    )


def _nanstd(samples: Tensor) -> Tensor:
    """Standard deviation (``ddof = 1``) along the last axis over the finite samples."""
    ok = samples.isfinite()
    k = ok.sum(-1).to(samples.dtype)
    x = torch.where(ok, samples, 0.0)
    mean = x.sum(-1) / k
    dev = torch.where(ok, samples - mean.unsqueeze(-1), 0.0)
    return ((dev * dev).sum(-1) / (k - 1)).sqrt()


def tidy_with_spread(
    measure: str,
    quantity: str,
    values: Tensor,
    dims: Sequence[str] = (),
    *,
    checkpoint: int,
    se: Tensor | None = None,
    ci_lo: Tensor | None = None,
    ci_hi: Tensor | None = None,
    coords: dict | None = None,
) -> pd.DataFrame:
    """``tables.tidy`` with the uncertainty columns ``se``, ``ci_lo``, ``ci_hi`` (each shaped like ``values``).

    A column given as None is left out (the table then holds NaN there).
    """
    frame = tidy(measure, quantity, values, dims, checkpoint=checkpoint, coords=coords)
    for column, spread in (("se", se), ("ci_lo", ci_lo), ("ci_hi", ci_hi)):
        if spread is not None:
            frame[column] = spread.detach().to("cpu", torch.float64).reshape(-1).numpy()
    return frame


def fluctuation_tables(
    measure: str,
    quantity: str,
    values: Tensor,
    dims: Sequence[str],
    fl: Fluctuations,
    *,
    checkpoint: int,
    coords: dict | None = None,
    prompt_ids: Tensor | np.ndarray | None = None,
    max_prompts: int | None = None,
) -> list[pd.DataFrame]:
    """The ``<quantity>_prompt`` rows (one per prompt with a value) and the ``<quantity>_chi`` rows.

    Args:
        measure: the measure's name.
        quantity: the order parameter ``q``.
        values: ``[*dims, prompt]`` per-prompt values (NaN: no row).
        dims: the dims of ``q`` (its ``_prompt`` rows add ``index``, the prompt's number in the batch).
        fl: ``fluctuations(values, ...)``.
        checkpoint: training step.
        coords: coordinates of ``dims`` as in ``tidy``.
        prompt_ids: the batch number of each prompt along the last axis (default ``0..n-1``); a split's
            prompts keep their numbers in the whole batch.
        max_prompts: store ``_prompt`` rows for at most this many prompts, evenly spaced (None: all).
    """
    n = values.shape[-1]
    ids = np.arange(n) if prompt_ids is None else np.asarray(prompt_ids, dtype=np.int64)
    pick = _kept_prompts(n, max_prompts)
    values, ids = values[..., torch.as_tensor(pick, device=values.device)], ids[pick]
    per_prompt = tidy(
        measure,
        f"{quantity}_prompt",
        values,
        (*dims, "index"),
        checkpoint=checkpoint,
        coords={**(coords or {}), "index": ids},
    )
    per_prompt = per_prompt[per_prompt["value"].notna()]
    chi = tidy_with_spread(
        measure,
        f"{quantity}_chi",
        fl.chi,
        dims,
        checkpoint=checkpoint,
        se=fl.chi_se,
        ci_lo=fl.chi_lo,
        ci_hi=fl.chi_hi,
        coords=coords,
    )
    return [per_prompt, chi]


def fluctuation_frame(
    measure: str,
    quantity: str,
    value: Tensor,
    values: Tensor,
    dims: Sequence[str],
    fl: Fluctuations,
    *,
    checkpoint: int,
    coords: dict | None = None,
    prompt_ids: Tensor | np.ndarray | None = None,
    max_prompts: int | None = None,
) -> pd.DataFrame:
    """``q``'s rows with ``se``/``ci_lo``/``ci_hi``, its ``q_prompt`` rows and its ``q_chi`` rows, as one frame.

    The same rows as ``tidy_with_spread`` and ``fluctuation_tables`` together, built in one DataFrame:
    on a small model pandas' construction of three frames costs more than the statistics. The frame
    is not normalised; ``tables.concat_tables`` does that.

    Args:
        measure: the measure's name.
        quantity: the order parameter ``q``.
        value: ``[*dims]`` its reported value.
        values: ``[*dims, prompt]`` its per-prompt values (NaN: no row).
        dims: the dims of ``q``.
        fl: ``fluctuations(values, ...)``.
        checkpoint: training step.
        coords: coordinates of ``dims`` (default: the index along each).
        prompt_ids: the batch number of each prompt (default ``0..n-1``).
        max_prompts: store ``_prompt`` rows for at most this many prompts, evenly spaced (None: all).
    """
    ids = np.arange(values.shape[-1]) if prompt_ids is None else np.asarray(prompt_ids, dtype=np.int64)
    pick = _kept_prompts(values.shape[-1], max_prompts)
    values, ids = values[..., torch.as_tensor(pick, device=values.device)], ids[pick]
    shape = tuple(value.shape)
    k, n = int(np.prod(shape, dtype=np.int64)), int(values.shape[-1])
    per_prompt = _numpy(values).reshape(k, n)
    keep = ~np.isnan(per_prompt)
    rows_of = np.repeat(np.arange(k), n)[keep.ravel()]  # which (dims) cell each prompt row belongs to
    cell = np.concatenate([np.arange(k), rows_of, np.arange(k)])
    nan_k = np.full(k, np.nan)
    columns: dict[str, object] = {
        "measure": measure,
        "checkpoint": int(checkpoint),
        "quantity": np.concatenate(
            [
                np.full(k, quantity, dtype=object),
                np.full(len(rows_of), f"{quantity}_prompt", dtype=object),
                np.full(k, f"{quantity}_chi", dtype=object),
            ]
        ),
        "value": np.concatenate([_numpy(value).ravel(), per_prompt[keep], _numpy(fl.chi).ravel()]),
    }
    grids = np.indices(shape).reshape(len(shape), k) if shape else np.zeros((0, k), dtype=np.int64)
    for axis, name in enumerate(dims):
        along = grids[axis][cell]
        columns[name] = _numpy(torch.as_tensor(coords[name]))[along] if coords and name in coords else along
    columns["index"] = np.concatenate([nan_k, np.tile(ids, k)[keep.ravel()].astype(np.float64), nan_k])
    nan_p = np.full(len(rows_of), np.nan)
    for column, own, chi in (
        ("se", fl.se, fl.chi_se),
        ("ci_lo", fl.ci_lo, fl.chi_lo),
        ("ci_hi", fl.ci_hi, fl.chi_hi),
    ):
        columns[column] = np.concatenate([_numpy(own).ravel(), nan_p, _numpy(chi).ravel()])
    frame = pd.DataFrame(columns)
    for col in ("layer", "head"):
        if col not in frame:
            frame[col] = np.nan
    # A χ of fewer than two prompts is undefined: no row rather than a NaN value.
    undefined = np.concatenate(
        [np.zeros(k + len(rows_of), dtype=bool), np.isnan(columns["value"][k + len(rows_of) :])]
    )
    return frame[~undefined] if undefined.any() else frame


def _kept_prompts(n: int, max_prompts: int | None) -> np.ndarray:
    """The prompts whose ``_prompt`` rows are stored: all, or ``max_prompts`` evenly spaced in the batch."""
    if max_prompts is None or n <= max_prompts:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_prompts)).astype(np.int64))


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
