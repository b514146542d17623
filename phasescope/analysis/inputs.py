"""What a measure runs on: a batch of token sequences, with which targets count for the loss.

Zoo models bring their own task data (``phasescope.zoo``); language models get a list of texts, the
user's or the small built-in set in ``phasescope.analysis.texts``, tokenised and cut into equal-length prompts
so that no padding (and no padded query rows) ever reaches the measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = ["Batch", "repeated_random_tokens"]


@dataclass
class Batch:
    """Token sequences to measure on.

    Attributes:
        tokens: ``[batch, seq]`` token ids.
        target_mask: ``[batch, seq]``; True where the prediction *of* ``tokens[b, t]`` (made at
            position ``t - 1``) counts for the loss. Column 0 is always False.
        splits: named subsets of the batch (``[batch]`` bool masks), e.g. ``{"train": ..., "test": ...}``
            for grokking; the loss measure reports loss and accuracy per split.
        period: when every sequence is a block repeated once, its length (the induction offset).
        description: one line saying where the data came from, kept in the analysis result.
    """

    tokens: Int[Tensor, "batch seq"]
    target_mask: Bool[Tensor, "batch seq"]
    splits: dict[str, Bool[Tensor, " batch"]] = field(default_factory=dict)
    period: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2 or self.target_mask.shape != self.tokens.shape:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and target_mask must both be [batch, seq]")
        if not self.splits:
            self.splits = {"eval": torch.ones(self.tokens.shape[0], dtype=torch.bool)}

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            tokens=self.tokens.to(device),
            target_mask=self.target_mask.to(device),
            splits={k: v.to(device) for k, v in self.splits.items()},
            period=self.period,
            description=self.description,
        )


def repeated_random_tokens(n: int, half_len: int, vocab: int, seed: int, prefix: int | None = None) -> Batch:
    """``n`` sequences of ``half_len`` uniform random tokens repeated once: the induction probe.

    Args:
        n: number of sequences.
        half_len: length of the repeated block (the induction period).
        vocab: tokens are drawn from ``[0, vocab)``.
        seed: makes the batch reproducible.
        prefix: an optional token (e.g. BOS) put in front of every sequence.

    Returns:
        A Batch whose target mask covers the second, predictable copy.
    """
    gen = torch.Generator().manual_seed(seed)
    block = torch.randint(0, vocab, (n, half_len), generator=gen)
    tokens = torch.cat([block, block], dim=1)
    offset = 0
    if prefix is not None:
        tokens = torch.cat([torch.full((n, 1), prefix, dtype=tokens.dtype), tokens], dim=1)
        offset = 1
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    # The second copy is predictable from the first, except its first token (the period is unknown
    # until the repeat starts).
    mask[:, offset + half_len + 1 :] = True
    return Batch(
        tokens, mask, period=half_len, description=f"{n} random blocks of {half_len} tokens, repeated"
    )
