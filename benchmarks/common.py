"""What every benchmark shares: the row it reports, a timer, the machine it ran on, toy models.

Benchmarks measure speed, never correctness (that is ``tests/``). Each benchmark module exposes
``run(size, device) -> list[Row]``; ``benchmarks.run`` renders the rows into docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GPT2_SMALL", "ROW_FIELDS", "Row", "Timing", "machine_info", "sync", "time_it", "toy_config"]

# GPT-2-small's shape as HookedTransformerConfig keywords (random init: no weights are downloaded).
GPT2_SMALL: dict[str, Any] = dict(
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_head=64,
    d_mlp=3072,
    d_vocab=50257,
    n_ctx=1024,
    act_fn="gelu_new",
    normalization_type="LN",
    positional_embedding_type="standard",
)


@dataclass
class Row:
    """One measured line of a benchmark table.

    ``seconds`` is the median wall time over ``repeats`` runs (``cpu_seconds`` the median CPU time of
    this process, all threads); ``ratio`` is ``seconds / reference`` seconds of the row named by
    ``reference`` (or a ratio the benchmark defines, explained in ``note``), ``cpu_ratio`` the same for
    CPU seconds (steadier than wall time on a loaded machine).
    """

    benchmark: str
    case: str
    variant: str
    seconds: float
    cpu_seconds: float | None = None
    repeats: int = 1
    ratio: float | None = None
    reference: str = ""
    cpu_ratio: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ROW_FIELDS = (
    "benchmark",
    "case",
    "variant",
    "seconds",
    "cpu_seconds",
    "repeats",
    "ratio",
    "cpu_ratio",
    "reference",
    "note",
)


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float
    repeats: int
    result: Any = None


def sync(device: str) -> None:
    """Wait for queued accelerator work, so a wall-clock time covers it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_it(fn: Callable[[], Any], repeats: int = 1, device: str = "cpu", warmup: int = 0) -> Timing:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls (after ``warmup`` calls)."""
    result = None
    for _ in range(warmup):
        result = fn()
    sync(device)
    walls, cpus = [], []
    for _ in range(max(1, repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        sync(device)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return Timing(statistics.median(walls), statistics.median(cpus), len(walls), result)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, str]:
    """CPU model, cores, threads, load, memory, torch version and device, for the doc's header."""
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(0)})",
    }
    try:
        info["load average (1 min)"] = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory"] = f"{pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return info


def toy_config(**overrides: Any) -> Any:
    """The zoo's reference architecture (docs/zoo.md): 2 layers, attention only, d_model 64, 4 heads, ctx 32."""
    from transformer_lens import HookedTransformerConfig

    kwargs: dict[str, Any] = dict(
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_vocab=64,
        n_ctx=32,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        seed=0,
    )
    kwargs.update(overrides)
    return HookedTransformerConfig(**kwargs)
