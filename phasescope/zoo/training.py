"""The zoo's training loop: seeded model, AdamW, a progress bar, checkpoints in our series format.

Step ``s`` means the weights after ``s`` optimiser updates; step 0 is the initialisation. Every
metric in the history at step ``s`` is measured on the weights of checkpoint ``s`` (before the update
that leads to ``s + 1``), so a history row and the checkpoint of the same step always agree.

The manifest is written last: a series directory without one is an unfinished run.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from phasescope.models.series import SeriesManifest, write_manifest, write_series_checkpoint

# torch loads lazily: the API imports the zoo's catalogue (ZOO, is_trained) and must not import torch.
if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DEFAULT_THREADS", "Objective", "build_model", "run_training", "torch_threads"]

# One thread, whatever the machine: on an idle 2-core machine a second one gains nothing for the
# induction series (22 vs 23 ms a step) and 1.35x for grokking, while on a busy one OpenMP threads
# spin-wait for each other and a step runs 10-15x slower (at a load of 14: 130 vs 1,900 ms). A fixed count also keeps the
# weights independent of the host's core count: GEMM kernels split their sums by thread, and 20 steps
# on 1 and on 2 threads already differ by ~1e-7.
DEFAULT_THREADS = 1


class Objective(Protocol):
    """What a task gives the loop: the training loss of one step, and an evaluation."""

    def loss(self, model: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """The loss to minimise at ``step`` (with grad) and metrics of that same batch."""
        ...

    def evaluate(self, model: Any) -> dict[str, float]:
        """Metrics on the task's evaluation data (called under ``torch.no_grad``)."""
        ...


def build_model(config: dict[str, Any], seed: int) -> Any:
    """A HookedTransformer from JSON-able config kwargs, initialised from ``seed``.

    The global torch RNG is forked, so building a model neither depends on nor disturbs the caller's
    random state (``HookedTransformerConfig(seed=...)`` would reseed Python, numpy and torch globally).
    """
    import torch

    with warnings.catch_warnings():
        # 3.9 deprecates HookedTransformer; we pin it on purpose (true pre-softmax scores).
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        cfg = HookedTransformerConfig(**config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return HookedTransformer(cfg)


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch CPU threads, restoring the previous setting afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    # Seven significant digits keep the manifest small while staying far below the batch noise.
    return {k: float(f"{float(v):.7g}") for k, v in metrics.items()}


def run_training(
    *,
    name: str,
    config: dict[str, Any],
    task: dict[str, Any],
    objective: Objective,
    seed: int,
    steps: int,
    checkpoint_steps: Sequence[int],
    history_every: int,
    optimizer: dict[str, Any],
    out_dir: Path,
    progress: bool = True,
    threads: int = DEFAULT_THREADS,
    schedule: dict[str, Any] | None = None,
) -> SeriesManifest:
    """Train a model and write its checkpoint series to ``out_dir``.

    Args:
        name: series name, kept in the manifest.
        config: HookedTransformerConfig kwargs (JSON-able).
        task: the data recipe, kept in the manifest so ``eval_batch`` can rebuild the data.
        objective: the task's training loss and evaluation.
        seed: initialisation seed (the objective carries its own data seeds).
        steps: optimiser updates; the last checkpoint is at ``steps``.
        checkpoint_steps: steps to save (each in ``0..steps``).
        history_every: evaluate and record a history row every this many steps (and at every
            checkpoint).
        optimizer: AdamW keyword arguments (``lr``, ``weight_decay``, ``betas``).
        out_dir: the series directory (created; existing checkpoints of the same steps are replaced).
        progress: show a tqdm bar.
        threads: torch CPU threads (see ``DEFAULT_THREADS``).
        schedule: extra schedule settings kept in the manifest's ``training`` (e.g. a variant's
            ``checkpoint_every``).

    Returns:
        The manifest, already written to ``out_dir``.
    """
    import torch

    saves = sorted(set(checkpoint_steps))
    assert saves and 0 <= saves[0] and saves[-1] <= steps, "checkpoint steps must lie in 0..steps"
    save_set = set(saves)
    history: list[dict[str, float]] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch_threads(threads) as n_threads:
        model = build_model(config, seed)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), **optimizer)
        t0, cpu0 = time.perf_counter(), time.process_time()
        bar = tqdm(total=steps, desc=f"zoo:{name}", disable=not progress, unit="step", leave=False)
        try:
            for step in range(steps + 1):
                loss, metrics = objective.loss(model, step)
                if step % history_every == 0 or step in save_set or step == steps:
                    with torch.no_grad():
                        metrics = {**metrics, **objective.evaluate(model)}
                    history.append(_rounded({"step": step, **metrics}))
                    bar.set_postfix(
                        {k: f"{v:.3g}" for k, v in metrics.items() if k.endswith(("loss", "acc"))},
                        refresh=False,
                    )
                if step in save_set:
                    write_series_checkpoint(out_dir, step, model.state_dict())
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
        finally:
            bar.close()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    manifest = SeriesManifest(
        name=name,
        config=dict(config),
        task=dict(task),
        seed=seed,
        steps=saves,
        history=history,
        training={
            "optimizer": "AdamW",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in optimizer.items()},
            "steps": steps,
            "history_every": history_every,
            **(schedule or {}),
            "wall_seconds": round(wall, 2),
            # CPU time says what the run costs on a busy machine, where wall time does not.
            "cpu_seconds": round(cpu, 2),
            "torch_threads": n_threads,
            "torch_version": torch.__version__,
        },
    )
    write_manifest(out_dir, manifest)
    return manifest
