"""Grokking at small scale: modular addition mod 59 (docs/PHYSICS.md, after Nanda et al. at p = 113).

A 1-layer transformer memorises its 40% training split within a few hundred full-batch steps, then
sits at perfect train accuracy and chance-level test accuracy until weight decay drives it to the
general (Fourier) solution, when test accuracy jumps, around step 1,500–1,750.

The model reads ``[a, b, =]`` and is trained on its prediction at the "=" position. Its config has
``n_ctx = 4`` although training uses 3 positions: ``eval_batch`` appends the answer as a fourth token
so that the answer is an ordinary next-token target in the ``Batch.target_mask`` convention and every
loss measure works unchanged. The fourth query row is never trained (docs/zoo.md).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from phasescope.zoo.spec import ZooSpec
from phasescope.zoo.tasks import MODULAR_ADDITION, modular_addition_data

__all__ = ["ModularAdditionObjective", "grokking_spec"]


def _last_position_only(resid: Tensor, hook: Any) -> Tensor:
    # Only the "=" position's prediction is trained or scored. The positions before it matter as
    # attention keys, which are computed by then; cutting them from the residual stream after the
    # attention spares two thirds of the MLP and unembedding, most of the model's arithmetic.
    return resid[:, -1:]


class ModularAdditionObjective:
    """Full-batch training on the train split; every history row also scores the test split."""

    def __init__(self, task: dict[str, Any]) -> None:
        tokens, answers, train = modular_addition_data(task)
        self.x_train, self.y_train = tokens[train], answers[train]
        self.x_test, self.y_test = tokens[~train], answers[~train]

    @staticmethod
    def answer_logits(model: Any, tokens: Tensor) -> Tensor:
        """``[pair, vocab]`` logits at the "=" position, as ``model(tokens)[:, -1]`` (to float rounding)."""
        hooks = [(f"blocks.{model.cfg.n_layers - 1}.hook_resid_mid", _last_position_only)]
        return model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]

    def loss(self, model: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the answer, predicted at the "=" position, over the whole train split."""
        logits = self.answer_logits(model, self.x_train)
        loss = F.cross_entropy(logits, self.y_train)
        acc = (logits.detach().argmax(-1) == self.y_train).float().mean()
        return loss, {"train_loss": loss.item(), "train_acc": acc.item()}

    def evaluate(self, model: Any) -> dict[str, float]:
        """Loss and accuracy on the test split (``eval_loss`` is the test loss)."""
        logits = self.answer_logits(model, self.x_test)
        loss = F.cross_entropy(logits, self.y_test).item()
        acc = (logits.argmax(-1) == self.y_test).float().mean().item()
        return {"eval_loss": loss, "test_loss": loss, "test_acc": acc}


def grokking_spec(p: int = 59, steps: int = 3000, expected_seconds: float = 120.0) -> ZooSpec:
    """Modular addition mod ``p`` (recipe of docs/PHYSICS.md)."""
    config: dict[str, Any] = {
        "model_name": f"zoo-grokking-p{p}",
        "n_layers": 1,
        "d_model": 128,
        "n_heads": 4,
        "d_head": 32,
        "d_mlp": 512,
        "act_fn": "relu",
        "d_vocab": p + 1,  # token p is "="
        "n_ctx": 4,  # [a, b, =] in training, plus the answer in eval_batch (see the module docstring)
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "default_prepend_bos": False,
    }
    task: dict[str, Any] = {
        "name": MODULAR_ADDITION,
        "p": p,
        "vocab": p + 1,
        "n_ctx": 3,
        "train_fraction": 0.4,
        # The split's seed is this plus the series seed: each seed grokks its own split.
        "split_seed": 1000,
        "eval_seed": 1234,
        "eval_size": p * p,
    }
    # Dense early (memorisation happens by step ~250), then every 50 steps through the jump.
    checkpoints = sorted(set(range(0, 300, 10)) | set(range(300, steps + 1, 50)))
    return ZooSpec(
        name=f"grokking-p{p}",
        description=f"1-layer transformer on (a + b) mod {p}, 40% of pairs: memorises, then generalises "
        "late (grokking)",
        config=config,
        task=task,
        seeded_task_keys=("split_seed",),
        steps=steps,
        checkpoint_steps=tuple(checkpoints),
        history_every=1,
        optimizer={"lr": 3e-3, "weight_decay": 1.0, "betas": (0.9, 0.98)},
        expected_seconds=expected_seconds,
        make_objective=ModularAdditionObjective,
    )
