"""Benchmark 7: a checkpoint sweep with and without loading overlapped with measuring (prefetch).

A local series of a GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, d_mlp 3072, the
GPT-2 vocabulary; about 163 M parameters, 650 MB per float32 checkpoint) is written by the benchmark
into a temporary directory: one random initialisation, each checkpoint scaled by its own factor so
that every file holds different numbers. ``run_local`` (what ``phasescope analyze`` does, in this
process) then measures every checkpoint twice: with ``prefetch=False`` (load, then measure, in turn)
and with ``prefetch=True`` (``phasescope.models.prefetch``: the next checkpoint is read in a background
thread while this one is measured).

The measure is ``entropy`` on the default prompts (16 × 64 tokens): one forward pass and the
entropies, a set where loading is a large part of each checkpoint's time, as it is on a GPU for
every measure set. On a CPU, heavier sets hide the load: ``thermo`` took 14 s per GPT-2-small
checkpoint against a 1.2 s read (a 0.92× bound on what overlapping can give), the weight spectra
tens of seconds (benchmark 2). Before each sweep the files are dropped from the page cache
(``posix_fadvise`` ``DONTNEED`` on the benchmark's own files), so every checkpoint is read from the
disk, as in a sweep of a series larger than memory (41 of these checkpoints are 26 GB).

Each row's note gives the median seconds per checkpoint (after the first, which also builds the
model) and, on the reference row, what one checkpoint's cold read and its measures cost alone: the
overlap cannot beat ``max(read, measure)`` per checkpoint.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import GPT2_SMALL, Row

__all__ = ["SIZES", "run"]

BENCHMARK = "sweep"
MEASURES = ["entropy"]

# size -> (case name, HookedTransformerConfig keywords, checkpoints)
SIZES: dict[str, tuple[str, dict[str, Any], int]] = {
    "toy": (
        "2L d64 toy",
        dict(GPT2_SMALL, n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=512, n_ctx=128),
        3,
    ),
    "quick": ("GPT-2-shaped 4L d256", dict(GPT2_SMALL, n_layers=4, d_model=256, n_heads=4, d_mlp=1024), 8),
    "full": ("GPT-2-small-shaped 12L d768", GPT2_SMALL, 41),
}
_DISK_MARGIN = 10 * 2**30  # bytes left free for everyone else on the disk


def _write_series(directory: Path, config: dict[str, Any], n: int) -> tuple[list[int], int]:
    """A series of ``n`` checkpoints (random init, scaled per step); returns its steps and file size."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from phasescope.models.series import SeriesManifest, write_manifest, write_series_checkpoint

    torch.manual_seed(0)
    base = HookedTransformer(HookedTransformerConfig(**config)).state_dict()
    steps = [100 * i for i in range(n)]
    size = 0
    for i, step in enumerate(steps):
        scale = 1.0 + 1e-3 * i  # different numbers in every file; the same shapes and cost
        state = {k: v * scale if v.is_floating_point() else v for k, v in base.items()}
        path = write_series_checkpoint(directory, step, state)
        size = path.stat().st_size
        _evict(path)
    write_manifest(directory, SeriesManifest(name=directory.name, config=config, steps=steps))
    return steps, size


def _evict(path: Path) -> None:
    """Drop one of our files from the page cache (it is flushed: written through commit_temp_file)."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _sweep(model: str, steps: list[int], directory: Path, prefetch: bool) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds of one cold ``run_local`` sweep, and its seconds per checkpoint."""
    from phasescope.analysis.run import run_local
    from phasescope.schemas import InputSpec

    for path in directory.glob("*.safetensors"):
        _evict(path)
    w0, c0 = time.perf_counter(), time.process_time()
    _, timings = run_local(model, steps, MEASURES, InputSpec(), prefetch=prefetch)
    return time.perf_counter() - w0, time.process_time() - c0, [timings[s] for s in steps]


def _parts(model: str, steps: list[int], directory: Path) -> tuple[float, float]:
    """Seconds of one cold read of a checkpoint (into memory) and of its measures alone."""
    from phasescope.analysis.run import build_batch, measure_checkpoint
    from phasescope.models.loading import load_model
    from phasescope.models.series import load_series_state_dict
    from phasescope.schemas import InputSpec

    step = steps[len(steps) // 2]
    _evict(next(directory.glob(f"*{step:06d}.safetensors")))
    t0 = time.perf_counter()
    state = {k: v.clone() for k, v in load_series_state_dict(directory, step).items()}
    read = time.perf_counter() - t0
    loaded = load_model(model, step, state=state)
    del state
    batch = build_batch(loaded, InputSpec())
    measure_checkpoint(loaded, MEASURES, InputSpec(), batch=batch)  # warm-up
    t0 = time.perf_counter()
    measure_checkpoint(loaded, MEASURES, InputSpec(), batch=batch)
    return read, time.perf_counter() - t0


def run(size: str = "full") -> list[Row]:
    """Write the series, then time the sweep without and with prefetch (cold page cache each time)."""
    from phasescope.config import get_settings

    case, config, n = SIZES[size]
    with tempfile.TemporaryDirectory(prefix="phasescope-bench-sweep-") as tmp:
        data_dir = Path(tmp)
        directory = data_dir / "models" / "sweep"
        # Fit the disk: the full series is 27 GB; write fewer checkpoints rather than fill it.
        per_file = 4 * _n_params(config) + 2**20
        fits = int((shutil.disk_usage(tmp).free - _DISK_MARGIN) // per_file)
        n_written = max(2, min(n, fits))
        previous = os.environ.get("PHASESCOPE_DATA_DIR")
        os.environ["PHASESCOPE_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
        try:
            w0 = time.perf_counter()
            steps, file_bytes = _write_series(directory, config, n_written)
            write_s = time.perf_counter() - w0
            read_s, measure_s = _parts("sweep", steps, directory)
            off = _sweep("sweep", steps, directory, prefetch=False)
            on = _sweep("sweep", steps, directory, prefetch=True)
        finally:
            if previous is None:
                os.environ.pop("PHASESCOPE_DATA_DIR", None)
            else:
                os.environ["PHASESCOPE_DATA_DIR"] = previous
            get_settings.cache_clear()
    fewer = f" (fewer than {n}: the disk holds no more)" if n_written < n else ""
    full_case = (
        f"{case}, {n_written} checkpoints{fewer} of {file_bytes / 2**20:,.0f} MiB, "
        f"{'+'.join(MEASURES)}, cold page cache"
    )
    best = max(read_s, measure_s) / (read_s + measure_s)

    def per_ckpt(times: list[float]) -> float:
        return statistics.median(times[1:]) if len(times) > 1 else times[0]

    rows = [
        Row(
            BENCHMARK,
            full_case,
            "load, then measure (prefetch off)",
            off[0],
            off[1],
            1,
            1.0,
            "prefetch off",
            1.0,
            f"{per_ckpt(off[2]):.3g} s per checkpoint; one cold read {read_s:.3g} s, measures {measure_s:.3g} s "
            f"alone (overlap bound {best:.2f}×); series written in {write_s:.0f} s",
        ),
        Row(
            BENCHMARK,
            full_case,
            "next checkpoint read while measuring (prefetch on)",
            on[0],
            on[1],
            1,
            on[0] / off[0],
            "prefetch off",
            on[1] / off[1] if off[1] else None,
            f"{per_ckpt(on[2]):.3g} s per checkpoint; speed-up {off[0] / on[0]:.2f}×",
        ),
    ]
    return rows


def _n_params(config: dict[str, Any]) -> int:
    """Parameters of a HookedTransformer with this config (embeddings, blocks, unembedding), roughly."""
    d, v, c, layers = config["d_model"], config["d_vocab"], config["n_ctx"], config["n_layers"]
    mlp = config.get("d_mlp") or 4 * d
    return 2 * v * d + c * d + layers * (4 * d * d + 2 * d * mlp + 10 * d)
