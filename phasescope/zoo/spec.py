"""``ZooSpec``: everything that defines one zoo series, as data plus the task's training objective."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasescope.models.series import SeriesManifest
from phasescope.zoo.training import DEFAULT_THREADS, Objective, run_training

__all__ = ["ZooSpec"]


@dataclass(frozen=True)
class ZooSpec:
    """One series of the zoo: architecture, task recipe, optimiser and schedule.

    Attributes:
        name: the series name, as in the model string ``zoo:<name>``.
        description: one line for listings.
        config: HookedTransformerConfig keyword arguments (JSON-able).
        task: the data recipe for seed 0 (see ``phasescope.zoo.tasks``).
        seeded_task_keys: recipe entries that are offsets to which the training seed is added (the
            training data stream or the train/test split), so every seed sees its own data while
            the evaluation set stays the same for all seeds.
        steps: optimiser updates; the last checkpoint is at ``steps``.
        checkpoint_steps: the steps saved, 0 (the initialisation) included.
        history_every: steps between history rows (every checkpoint also gets one).
        optimizer: AdamW keyword arguments.
        expected_seconds: wall time of a training run with the default single thread on an idle core
            (seconds), for progress messages.
        make_objective: builds the task's training objective from a seeded recipe.
    """

    name: str
    description: str
    config: dict[str, Any]
    task: dict[str, Any]
    seeded_task_keys: tuple[str, ...]
    steps: int
    checkpoint_steps: tuple[int, ...]
    history_every: int
    optimizer: dict[str, Any]
    expected_seconds: float
    make_objective: Callable[[dict[str, Any]], Objective] = field(repr=False)

    @property
    def n_layers(self) -> int:
        """Transformer blocks."""
        return int(self.config["n_layers"])

    @property
    def n_heads(self) -> int:
        """Attention heads per layer."""
        return int(self.config["n_heads"])

    def task_for_seed(self, seed: int) -> dict[str, Any]:
        """The data recipe of a run with training seed ``seed`` (what its manifest stores)."""
        return {k: v + seed if k in self.seeded_task_keys else v for k, v in self.task.items()}

    def train(
        self,
        out_dir: Path | str,
        seed: int = 0,
        progress: bool = True,
        max_steps: int | None = None,
        threads: int = DEFAULT_THREADS,
        every: int | None = None,
        name: str | None = None,
    ) -> SeriesManifest:
        """Train this series into ``out_dir`` and return its manifest (also written there).

        Writes straight into ``out_dir``; ``phasescope.zoo.train_series`` wraps this with a temporary
        directory and a rename so that an interrupted run never looks finished.

        Args:
            out_dir: the series directory.
            seed: the training seed (initialisation and data).
            progress: show a tqdm progress bar.
            max_steps: stop early after this many steps (for tests): checkpoints past it are dropped
                and the last step is always saved. Same seed and ``max_steps``: identical weights.
            threads: torch CPU threads while training (the default keeps results comparable).
            every: also save every multiple of this step (denser checkpoints near a transition;
                ``phasescope.zoo.variants``); recorded in the manifest's ``training``.
            name: the manifest's series name (default the recipe's; a variant passes its own).
        """
        steps = self.steps if max_steps is None else min(self.steps, int(max_steps))
        schedule = set(self.checkpoint_steps) | (set(range(0, steps + 1, every)) if every else set())
        saves = sorted({s for s in schedule if s <= steps} | {steps})
        task = self.task_for_seed(seed)
        return run_training(
            name=name or self.name,
            config=self.config,
            task=task,
            objective=self.make_objective(task),
            seed=seed,
            steps=steps,
            checkpoint_steps=saves,
            history_every=self.history_every,
            optimizer=self.optimizer,
            out_dir=Path(out_dir),
            progress=progress,
            threads=threads,
            schedule={"checkpoint_every": every} if every else None,
        )
