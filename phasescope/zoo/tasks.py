"""The zoo's task data, rebuilt from a manifest's ``task`` dict (the data recipe) alone.

Two tasks:

- ``induction``: sequences of ``n_ctx`` random tokens in which a block of random period
  ``k ∈ [period_min, period_max]`` repeats once right after itself (``[x_k, x_k, noise]``). The
  evaluation set has the fixed period ``eval_period`` (a block repeated, nothing else), and its loss
  counts only the predictable positions: the second copy except its first token.
- ``modular_addition``: every pair ``[a, b, =]`` with target ``(a + b) mod p`` at the last position;
  a seeded ``train_fraction`` of the ``p²`` pairs is the training split, the rest the test split.

Everything needed to rebuild the data (vocabulary, lengths, seeds, sizes) lives in the task dict, so a
series on disk can be measured on exactly the data it was trained and evaluated on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Int

# torch loads lazily: the API imports the zoo's catalogue (ZOO, is_trained) and must not import torch.
if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from phasescope.analysis.inputs import Batch

__all__ = [
    "INDUCTION",
    "MODULAR_ADDITION",
    "eval_batch",
    "induction_train_batch",
    "modular_addition_data",
]

INDUCTION = "induction"
MODULAR_ADDITION = "modular_addition"


def induction_train_batch(
    task: dict[str, Any], batch_size: int, generator: torch.Generator
) -> tuple[Int[Tensor, "batch seq"], Bool[Tensor, "batch seq"]]:
    """One training batch of the induction task: ``[x_k, x_k, noise]`` with ``k`` drawn per sequence.

    A single fixed period is not enough: a 1-layer model then solves it with a positional head and no
    induction head forms (docs/zoo.md), hence the random period.

    Args:
        task: the induction recipe (``vocab``, ``n_ctx``, ``period_min``, ``period_max``).
        batch_size: sequences in the batch.
        generator: the training data's random stream (advanced by the call).

    Returns:
        ``tokens [batch, n_ctx]`` and ``repeat_mask [batch, n_ctx]``, True at the predictable positions
        (the second copy except its first token), in the ``Batch.target_mask`` convention.
    """
    import torch

    n_ctx, vocab = int(task["n_ctx"]), int(task["vocab"])
    tokens = torch.randint(0, vocab, (batch_size, n_ctx), generator=generator)
    period = torch.randint(
        int(task["period_min"]), int(task["period_max"]) + 1, (batch_size, 1), generator=generator
    )
    pos = torch.arange(n_ctx).unsqueeze(0)  # [1, n_ctx], broadcast against period [batch, 1]
    second_copy = (pos >= period) & (pos < 2 * period)
    # Each position of the second copy reads its token from one period earlier; the rest stays random.
    source = torch.where(second_copy, pos - period, pos)
    tokens = torch.gather(tokens, 1, source)
    repeat_mask = second_copy & (pos >= period + 1)
    return tokens, repeat_mask


def modular_addition_data(
    task: dict[str, Any],
) -> tuple[Int[Tensor, "pair 3"], Int[Tensor, " pair"], Bool[Tensor, " pair"]]:
    """All ``p²`` pairs of the modular-addition task, their answers and the seeded training split.

    Args:
        task: the modular-addition recipe (``p``, ``train_fraction``, ``split_seed``).

    Returns:
        ``tokens [p², 3]`` (rows ``[a, b, p]``, ordered by ``a`` then ``b``), ``answers [p²]`` and
        ``train [p²]``, True for the ``round(train_fraction · p²)`` training pairs.
    """
    import torch

    p = int(task["p"])
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # token p is "="
    answers = (a + b) % p
    generator = torch.Generator().manual_seed(int(task["split_seed"]))
    perm = torch.randperm(p * p, generator=generator)
    train = torch.zeros(p * p, dtype=torch.bool)
    train[perm[: round(float(task["train_fraction"]) * p * p)]] = True
    return tokens, answers, train


def eval_batch(manifest_task: dict[str, Any], n: int | None = None, seed: int | None = None) -> Batch:
    """The task's own evaluation data, rebuilt from a manifest's ``task`` dict.

    Args:
        manifest_task: the ``task`` dict of a zoo series manifest.
        n: sequences wanted; None = the recipe's ``eval_size`` (induction) or all ``p²`` pairs
            (modular addition). For induction, ``n`` sequences are the first ``n`` of the full set.
            For modular addition, a seeded random subset of ``n`` pairs (in pair order), so that a
            small batch still covers both splits.
        seed: the data seed; None = the recipe's ``eval_seed``.

    Returns:
        For induction, blocks of ``eval_period`` tokens repeated once, the predictable positions in
        ``target_mask`` and ``period`` set. For modular addition, ``[a, b, =, answer]`` rows: the
        answer is appended so that ``target_mask`` (True only at index 3, the prediction made at the
        "=" position 2) marks the answer as a next-token target; ``splits`` holds ``train``/``test``.

    Raises:
        ValueError: for a task dict this module does not know.
    """
    import torch

    from phasescope.analysis.inputs import Batch, repeated_random_tokens

    kind = manifest_task.get("name")
    seed = int(manifest_task.get("eval_seed", 0)) if seed is None else int(seed)
    if kind == INDUCTION:
        size = int(manifest_task["eval_size"]) if n is None else int(n)
        period = int(manifest_task["eval_period"])
        batch = repeated_random_tokens(size, period, int(manifest_task["vocab"]), seed)
        batch.description = (
            f"induction eval: {size} random blocks of {period} tokens repeated once (seed {seed})"
        )
        return batch
    if kind == MODULAR_ADDITION:
        tokens, answers, train = modular_addition_data(manifest_task)
        p = int(manifest_task["p"])
        keep = torch.arange(p * p)
        if n is not None and n < p * p:
            generator = torch.Generator().manual_seed(seed)
            keep = torch.randperm(p * p, generator=generator)[: int(n)].sort().values
        rows = torch.cat([tokens, answers.unsqueeze(1)], dim=1)[keep]
        target_mask = torch.zeros_like(rows, dtype=torch.bool)
        target_mask[:, 3] = True
        return Batch(
            rows,
            target_mask,
            splits={"train": train[keep], "test": ~train[keep]},
            period=None,
            description=f"modular addition mod {p}: {len(keep)} of {p * p} pairs [a, b, =, (a+b) mod p]",
        )
    raise ValueError(f"unknown zoo task {kind!r}; expected {INDUCTION!r} or {MODULAR_ADDITION!r}")
