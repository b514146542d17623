"""The model's own loss on the analysis inputs: per checkpoint, this is the loss curve."""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from phasescope.measures.fluctuations import fluctuation_frame, fluctuations, resample_counts
from phasescope.measures.tables import concat_tables, tidy

__all__ = ["loss_table", "token_losses"]


def token_losses(
    logits: Float[Tensor, "batch seq vocab"], tokens: Int[Tensor, "batch seq"]
) -> tuple[Float[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]:
    """Cross-entropy (nats) and correctness of predicting ``tokens[:, t]`` from position ``t - 1``.

    Column 0 has nothing predicting it: its loss is 0 and it is never correct; callers mask it out.
    """
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = tokens[:, 1:]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    correct = logp.argmax(-1) == target
    pad = torch.zeros_like(nll[:, :1])
    return torch.cat([pad, nll], dim=1), torch.cat([pad.bool(), correct], dim=1)


def loss_table(
    logits: Float[Tensor, "batch seq vocab"],
    tokens: Int[Tensor, "batch seq"],
    target_mask: Bool[Tensor, "batch seq"],
    splits: dict[str, Bool[Tensor, " batch"]],
    checkpoint: int,
) -> pd.DataFrame:
    """Mean loss and accuracy over the masked targets (measure ``loss``), with their fluctuations.

    Emits ``loss`` and ``accuracy`` over the whole batch and, when the batch has named splits other
    than the default ``eval`` (e.g. grokking's ``train`` / ``test``), ``loss_<split>`` and
    ``accuracy_<split>`` for each. Also ``loss_se``: the standard error of the mean loss over
    prompts, so a loss curve carries its own sampling uncertainty.

    Each of these order parameters ``q`` also gets (docs/measures.md, "Uncertainties and
    susceptibility"; ``phasescope.measures.fluctuations``) its value per prompt, ``q_prompt``
    (``index`` = the prompt's number in the batch; a prompt without a target has none), the
    susceptibility ``q_chi`` over prompts with ``N_p`` = the prompt's target tokens, and on its own
    rows the standard error over prompts (``se``) and a 95% bootstrap interval (``ci_lo``, ``ci_hi``).
    """
    nll, correct = token_losses(logits, tokens)
    mask = target_mask.to(nll.dtype)
    rows = []

    def summarise(select: Tensor, suffix: str) -> None:
        m = mask[select]
        count = m.sum()
        if count == 0:
            return
        units = m.sum(1)  # N_p: the prompt's target tokens
        has = units > 0
        ids = select.nonzero().flatten()[has].cpu()
        units = units[has]
        per_prompt = {
            f"loss{suffix}": (nll[select] * m).sum(1)[has] / units,
            f"accuracy{suffix}": (correct[select].to(m.dtype) * m).sum(1)[has] / units,
        }
        counts = resample_counts(int(has.sum()), device=units.device)
        for quantity, values in per_prompt.items():
            fl = fluctuations(values, units, counts=counts)
            rows.append(
                fluctuation_frame(
                    "loss", quantity, fl.mean, values, (), fl, checkpoint=checkpoint, prompt_ids=ids
                )
            )
        if suffix == "":
            # As before the per-prompt rows existed (compatibility): every prompt, one without a
            # target counting as 0.
            every = (nll[select] * m).sum(1) / m.sum(1).clamp_min(1)
            se = (
                every.std(unbiased=True) / every.numel() ** 0.5
                if every.numel() > 1
                else torch.tensor(float("nan"))
            )
            rows.append(tidy("loss", "loss_se", se, checkpoint=checkpoint))

    everything = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    summarise(everything, "")
    for name, select in splits.items():
        if name != "eval":
            summarise(select, f"_{name}")
    return concat_tables(rows)
