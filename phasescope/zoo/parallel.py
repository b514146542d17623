"""Train one zoo series per seed, several at once in separate processes (``zoo train --seeds``).

Each seed trains in its own process on one torch thread (``DEFAULT_THREADS``), so ``parallel``
processes use ``parallel`` cores and every seed's weights are bit-identical to a serial run of the
same seed (a second thread would split the GEMM sums differently). ``parallel`` is capped at the
machine's core count: past it the processes only wait for each other. Each run writes through
``train_series``, staging directory and rename included, so a killed pool leaves nothing that looks
trained.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from phasescope.config import Settings, get_settings

__all__ = ["SeedRun", "train_seeds", "train_variants"]


@dataclass(frozen=True)
class SeedRun:
    """One seed's training, as ``train_seeds`` reports it.

    Attributes:
        seed: the training seed.
        model: its model string (``zoo:induction-2l-seed3``).
        path: its series directory.
        seconds: wall time of this seed's process (0 when the series was already complete).
        trained: False when a complete series was reused.
    """

    seed: int
    model: str
    path: Path
    seconds: float
    trained: bool


def _train_one(variant: str, out_dir: str, force: bool) -> tuple[float, bool]:
    """One series (a variant's name), in a worker process: (wall seconds, whether it trained)."""
    from phasescope.zoo.registry import is_trained, train_series

    path = Path(out_dir)
    if not force and is_trained(variant, out_dir=path):
        return 0.0, False
    t0 = time.perf_counter()
    train_series(variant, progress=False, force=force, out_dir=path)
    return time.perf_counter() - t0, True


def train_seeds(
    name: str,
    seeds: Sequence[int],
    *,
    parallel: int = 1,
    every: int | None = None,
    force: bool = False,
    settings: Settings | None = None,
    out_dirs: dict[int, Path] | None = None,
    on_done: Callable[[SeedRun], None] | None = None,
) -> list[SeedRun]:
    """Train series ``name`` for every seed in ``seeds`` (complete ones are reused unless ``force``).

    Args:
        name: the recipe, optionally with ``-every<N>`` (a seed in the name is replaced by each seed).
        seeds: training seeds.
        parallel: processes at once (capped at the core count and the number of seeds); 1 trains in
            this process.
        every: denser checkpoints (``phasescope.zoo.variants``), default the name's.
        force: retrain complete series.
        settings: where the zoo directory is.
        out_dirs: a directory per seed instead of the zoo directory's (tests keep a cache this way).
        on_done: called with each seed's report as it finishes.

    Returns:
        One ``SeedRun`` per seed, in seed order.
    """
    from phasescope.zoo.registry import get_variant

    settings = settings or get_settings()
    variants = [get_variant(name, seed=seed, every=every) for seed in sorted(set(seeds))]
    dirs = [Path((out_dirs or {}).get(v.seed) or settings.zoo_dir / v.name) for v in variants]
    return train_variants([v.name for v in variants], dirs, parallel=parallel, force=force, on_done=on_done)


def train_variants(
    names: Sequence[str],
    out_dirs: Sequence[Path],
    *,
    parallel: int = 1,
    force: bool = False,
    on_done: Callable[[SeedRun], None] | None = None,
) -> list[SeedRun]:
    """Train several series, each a variant name into its directory, ``parallel`` processes at once.

    Args:
        names: variant names (``induction-2l-seed3``), any recipes.
        out_dirs: one directory per name.
        parallel: processes at once (capped at the core count and the number of series).
        force: retrain complete series.
        on_done: called with each series' report as it finishes.

    Returns:
        One ``SeedRun`` per name, in the order given.
    """
    from phasescope.zoo.variants import parse_series_name

    variants = [parse_series_name(n) for n in names]
    workers = max(1, min(int(parallel), len(variants), os.cpu_count() or 1))
    runs: dict[int, SeedRun] = {}

    def report(i: int, seconds: float, trained: bool) -> None:
        runs[i] = SeedRun(variants[i].seed, variants[i].model, Path(out_dirs[i]), seconds, trained)
        if on_done is not None:
            on_done(runs[i])

    if workers == 1:
        for i, v in enumerate(variants):
            report(i, *_train_one(v.name, str(out_dirs[i]), force))
    else:
        import multiprocessing

        # spawn, not fork: the parent may hold torch's thread pools, which a fork copies half-made.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {
                pool.submit(_train_one, v.name, str(out_dirs[i]), force): i for i, v in enumerate(variants)
            }
            for future in as_completed(futures):
                report(futures[future], *future.result())
    return [runs[i] for i in range(len(variants))]
