"""Induction heads on CPU: the reference phenomenon (docs/zoo.md).

``induction-2l`` (two attention-only layers) sits on a loss plateau near ln 64 ≈ 4.16 nats, then
forms previous-token heads in layer 0 and induction heads in layer 1 and drops to ≈ 0.7 nats;
``induction-1l`` is the control that cannot compose two heads and never leaves the plateau.

Training loss: next-token cross-entropy over *all* positions of ``[x_k, x_k, noise]`` sequences.
Training on the repeated part only also forms induction heads, but earlier (half-way near step 290 in
a seed-0 prototype) and down to ≈ 0.2 nats, away from the reference numbers; the full-sequence
objective reproduces them (plateau near 4.1, half-way at step 455–498 over seeds 0–4, final ≈ 0.73;
see docs/zoo.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float, Int

from phasescope.zoo.spec import ZooSpec
from phasescope.zoo.tasks import INDUCTION, eval_batch, induction_train_batch

# torch loads lazily: the API imports the zoo's catalogue (ZOO, is_trained) and must not import torch.
if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["InductionObjective", "induction_spec", "next_token_nll"]


def next_token_nll(
    logits: Float[Tensor, "batch seq vocab"], tokens: Int[Tensor, "batch seq"]
) -> Float[Tensor, "batch seq"]:
    """Cross-entropy (nats) of predicting ``tokens[:, t]`` from position ``t - 1``; column 0 is 0.

    Aligned with ``Batch.target_mask`` so the same mask selects the positions in training and in
    the measures.
    """
    import torch

    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return torch.cat([torch.zeros_like(nll[:, :1]), nll], dim=1)


def _masked_mean(values: Tensor, mask: Bool[Tensor, "batch seq"]) -> Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum()


class InductionObjective:
    """Fresh random ``[x_k, x_k, noise]`` batches each step; evaluation on the fixed-period set."""

    def __init__(self, task: dict[str, Any]) -> None:
        import torch

        self.task = task
        self.batch_size = int(task["batch_size"])
        self.generator = torch.Generator().manual_seed(int(task["train_seed"]))
        batch = eval_batch(task)
        self.eval_tokens, self.eval_mask = batch.tokens, batch.target_mask

    def loss(self, model: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """Next-token loss of one fresh batch over the positions the recipe trains on."""
        import torch

        tokens, repeat = induction_train_batch(self.task, self.batch_size, self.generator)
        nll = next_token_nll(model(tokens), tokens)
        if self.task["loss_positions"] == "all":
            trained = torch.ones_like(repeat)
            trained[:, 0] = False  # nothing predicts the first token
        else:
            trained = repeat
        loss = _masked_mean(nll, trained)
        return loss, {
            "train_loss": loss.item(),
            "train_repeat_loss": _masked_mean(nll.detach(), repeat).item(),
        }

    def evaluate(self, model: Any) -> dict[str, float]:
        """Repeated-half loss of the fixed-period evaluation set (the loss the reference quotes)."""
        nll = next_token_nll(model(self.eval_tokens), self.eval_tokens)
        return {"eval_loss": _masked_mean(nll, self.eval_mask).item()}


def induction_spec(n_layers: int, expected_seconds: float) -> ZooSpec:
    """The induction series with ``n_layers`` attention-only layers (recipe in docs/zoo.md)."""
    config: dict[str, Any] = {
        "model_name": f"zoo-induction-{n_layers}l",
        "n_layers": n_layers,
        "d_model": 64,
        "n_heads": 4,
        "d_head": 16,
        "d_vocab": 64,
        "n_ctx": 32,
        "attn_only": True,
        "d_mlp": None,
        "act_fn": None,
        "normalization_type": None,
        "positional_embedding_type": "standard",
        # Our tokens are task symbols: there is no BOS to prepend.
        "default_prepend_bos": False,
    }
    task: dict[str, Any] = {
        "name": INDUCTION,
        "vocab": 64,
        "n_ctx": 32,
        "period_min": 4,
        "period_max": 16,
        "batch_size": 64,
        "loss_positions": "all",
        # The training stream's seed is this plus the series seed; an offset keeps it apart from the
        # initialisation stream, which is seeded with the series seed itself.
        "train_seed": 1000,
        "eval_period": 16,
        "eval_size": 256,
        "eval_seed": 1234,
    }
    steps, every = 1000, 25
    control = (
        " (control: one layer cannot compose heads, so it never leaves the plateau)" if n_layers == 1 else ""
    )
    return ZooSpec(
        name=f"induction-{n_layers}l",
        description=f"{n_layers}-layer attention-only transformer learning to copy repeated blocks "
        f"(induction heads){control}",
        config=config,
        task=task,
        seeded_task_keys=("train_seed",),
        steps=steps,
        checkpoint_steps=tuple(range(0, steps + 1, every)),
        history_every=every,
        optimizer={"lr": 3e-3, "weight_decay": 0.01, "betas": (0.9, 0.999)},
        expected_seconds=expected_seconds,
        make_objective=InductionObjective,
    )
