"""Local learning coefficient (LLC) of a checkpoint, by SGLD sampling with devinterp.

The estimator (Lau et al. 2023, devinterp's ``devinterp.slt.llc.llc``) samples the tempered, localised
posterior around the checkpoint θ*,

    p(w) ∝ exp(−nβ · L(w) − (γ/2)‖w − θ*‖²),

with SGLD steps ``Δw = −(ε/2)(nβ ∇L_B(w) + γ(w − θ*)) + N(0, ε)`` on minibatches B, and returns

    λ̂ = nβ · (E_chain[L(w)] − L(θ*))

per chain (devinterp averages the sampled minibatch losses over every step, burn-in included). For a
regular model near a non-degenerate minimum λ = d/2 (half the parameter count); a smaller λ means a
more degenerate (simpler) solution. We report the mean over chains and their spread (``llc_std``) as
the uncertainty, and return the sampler settings beside the table so they are stored with the result.

devinterp is written for language-model datasets (a Hugging Face ``Dataset`` with an ``input_ids``
column and a per-token loss). We feed it the *index* of each item as a two-token sequence ``[i, i]``
and compute that item's loss ourselves, so any per-item loss works: for a ``Batch`` an item is a
prompt, whose loss is its masked next-token cross-entropy scaled so that the mean over items is the
mean over all masked targets (the loss of ``phasescope.measures.loss``).

devinterp writes its samples to a zarr store: we give it a temporary directory that is removed on
return, and restore the global RNG states it reseeds (torch, numpy, random).
"""

from __future__ import annotations

import math
import random
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from phasescope.analysis.inputs import Batch
from phasescope.errors import MeasureError
from phasescope.measures.fluctuations import tidy_with_spread
from phasescope.measures.loss import token_losses
from phasescope.measures.tables import concat_tables, tidy

__all__ = ["LLCResult", "batch_item_loss", "estimate_llc", "llc_table"]

ItemLoss = Callable[[torch.nn.Module, Int[Tensor, " items"]], Float[Tensor, " items"]]


@dataclass
class LLCResult:
    """An LLC estimate with its spread and the settings that produced it.

    Attributes:
        mean: λ̂ averaged over chains (dimensionless).
        std: standard deviation of λ̂ across chains.
        per_chain: λ̂ of each chain ``[chain]``.
        init_loss: the loss at θ* (nats for a language model), as devinterp measured it.
        loss_trace: mean minibatch loss per chain and SGLD step ``[chain, step]``.
        settings: the sampler settings, JSON-able (store them with the result).
    """

    mean: float
    std: float
    per_chain: np.ndarray
    init_loss: float
    loss_trace: np.ndarray = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)


def batch_item_loss(batch: Batch) -> ItemLoss:
    """The per-prompt loss of ``batch``, for ``estimate_llc``: masked next-token cross-entropy.

    Each prompt's summed loss is divided by the batch's mean number of masked targets per prompt,
    so that the mean over prompts equals the mean over all masked targets, as in ``loss_table``.
    """
    mask = batch.target_mask.to(torch.float64)
    per_prompt = float(mask.sum()) / mask.shape[0]

    def loss(model: torch.nn.Module, idx: Int[Tensor, " items"]) -> Float[Tensor, " items"]:
        tokens = batch.tokens[idx]
        nll, _ = token_losses(model(tokens, return_type="logits"), tokens)
        return (nll * mask[idx]).sum(dim=1) / per_prompt

    return loss


class _RestoredRng:
    """Restore torch, numpy and ``random`` global RNG states on exit: devinterp reseeds all three."""

    def __enter__(self) -> None:
        self._torch = torch.random.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self._numpy = np.random.get_state()
        self._random = random.getstate()

    def __exit__(self, *exc: object) -> None:
        torch.random.set_rng_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        np.random.set_state(self._numpy)
        random.setstate(self._random)


def estimate_llc(
    model: torch.nn.Module,
    item_loss: ItemLoss,
    n_items: int,
    *,
    lr: float = 1e-4,
    n_beta: float | None = None,
    localization: float = 100.0,
    num_chains: int = 4,
    num_draws: int = 100,
    num_burnin_steps: int = 0,
    batch_size: int | None = None,
    seed: int = 0,
    param_masks: dict[str, Tensor | None] | None = None,
) -> LLCResult:
    """Estimate the LLC at the model's current parameters with devinterp's SGLD sampler.

    Args:
        model: the model at θ*; it is copied per chain and left unchanged.
        item_loss: ``(model, item indices [b]) -> per-item loss [b]``; its mean over items is the
            loss L whose LLC is estimated.
        n_items: number of items (indices ``0 … n_items − 1``).
        lr: SGLD step size ε.
        n_beta: inverse temperature nβ (default: devinterp's ``m / ln m`` for minibatch size m).
        localization: γ, the pull towards θ* (0 turns it off).
        num_chains: independent chains; their spread is the uncertainty.
        num_draws: SGLD steps per chain after burn-in.
        num_burnin_steps: steps per chain before drawing (devinterp still averages them in).
        batch_size: minibatch size m (default: all items, i.e. full-batch Langevin).
        seed: devinterp's ``init_seed`` (chain c uses ``seed + c``).
        param_masks: devinterp's weight restriction (``devinterp.slt.weight_restrictions``): the
            parameters the chains move, by name, each with a boolean mask of its sampled elements
            (None: all of it); the rest stay at θ*. None: every parameter (the unrestricted LLC).

    Returns:
        An ``LLCResult``.

    Raises:
        MeasureError: a chain's loss became NaN or infinite (lower ``lr`` or raise ``localization``).
    """
    from datasets import Dataset
    from devinterp.slt.llc import llc
    from devinterp.utils import default_nbeta

    m = batch_size or n_items
    if not 0 < m <= n_items:
        raise ValueError(f"batch_size must be in [1, {n_items}], got {batch_size}")
    n_beta = float(default_nbeta(m)) if n_beta is None else float(n_beta)
    device = str(next(model.parameters()).device)
    # devinterp wants language-model rows; a row [i, i] carries item i and one "predicted" position.
    dataset = Dataset.from_dict({"input_ids": [[i, i] for i in range(n_items)]}).with_format("torch")

    def per_token(mod: torch.nn.Module, input_ids: Tensor) -> Tensor:
        return item_loss(mod, input_ids[:, 0].to(device))[:, None]

    settings: dict[str, Any] = {
        "estimator": "devinterp.slt.llc.llc (SGLD, sgmcmc_sgld)",
        "devinterp_version": version("devinterp"),
        "lr": lr,
        "n_beta": n_beta,
        "localization": localization,
        "noise_level": 1.0,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_burnin_steps": num_burnin_steps,
        "batch_size": m,
        "n_items": n_items,
        "num_init_loss_batches": math.ceil(n_items / m),
        "seed": seed,
        "restricted": param_masks is not None,
    }
    with tempfile.TemporaryDirectory() as tmp, _RestoredRng(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = llc(
            model,
            dataset,
            {},
            lr=lr,
            n_beta=n_beta,
            loss_fn=per_token,
            num_chains=num_chains,
            num_draws=num_draws,
            num_burnin_steps=num_burnin_steps,
            batch_size=m,
            num_init_loss_batches=settings["num_init_loss_batches"],
            init_seed=seed,
            localization=localization,
            device=device,
            output_path=Path(tmp) / "samples.zarr",
            param_masks=param_masks,
        ).load()
    failed = [str(w.message) for w in caught if "Chain failed" in str(w.message)]
    if failed:
        # The overflow warnings of a diverged chain's losses are part of this error, not news.
        raise MeasureError(f"SGLD diverged ({'; '.join(failed)}): lower lr (now {lr}) or raise localization")
    for w in caught:
        # Everything else goes back to the caller's warning filters.
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    per_chain = np.asarray(out["llc_per_chain"].values, dtype=np.float64)
    return LLCResult(
        mean=float(per_chain.mean()),
        std=float(per_chain.std(ddof=1)) if len(per_chain) > 1 else math.nan,
        per_chain=per_chain,
        init_loss=float(out["init_loss"].values),
        loss_trace=np.asarray(out["loss_trace"].values, dtype=np.float64),
        settings=settings,
    )


def llc_table(model: torch.nn.Module, batch: Batch, checkpoint: int, **kwargs: Any) -> pd.DataFrame:
    """LLC of one checkpoint on the batch's prompts, as a tidy table (``measure="llc"``).

    Args:
        model: the model at the checkpoint (a HookedTransformer); not modified.
        batch: the prompts (the SGLD data: minibatches are drawn from them), on the model's device.
        checkpoint: the training step.
        **kwargs: sampler settings, passed to ``estimate_llc``.

    Returns:
        The tidy table, as every measure returns (``phasescope.measures.tables``). Quantities:
        ``llc_mean`` (its ``se``: ``llc_std / √chains``, NaN for one chain) and ``llc_std`` (spread
        over chains); ``llc_chain`` per chain (``index``);
        ``llc_init_loss`` (nats); ``sgld_loss`` (nats), the mean minibatch loss per chain (``index``)
        and SGLD step (``x``), to check the chains settled. The sampler settings are the arguments
        (a request's ``llc_*`` parameters, stored with it); ``estimate_llc`` returns them as a dict.
    """
    res = estimate_llc(model, batch_item_loss(batch), batch.tokens.shape[0], **kwargs)
    steps = np.arange(res.loss_trace.shape[1], dtype=np.float64)
    return concat_tables(
        [
            # The standard error of the mean over chains (docs/measures.md, "Uncertainties and
            # susceptibility"): the chains are the independent samples here, not the prompts.
            tidy_with_spread(
                "llc",
                "llc_mean",
                torch.tensor(res.mean),
                checkpoint=checkpoint,
                se=torch.tensor(res.std / math.sqrt(len(res.per_chain))),
            ),
            tidy("llc", "llc_std", res.std, checkpoint=checkpoint),
            tidy("llc", "llc_chain", res.per_chain, ("index",), checkpoint=checkpoint),
            tidy("llc", "llc_init_loss", res.init_loss, checkpoint=checkpoint),
            tidy(
                "llc", "sgld_loss", res.loss_trace, ("index", "x"), checkpoint=checkpoint, coords={"x": steps}
            ),
        ]
    )
