"""Read the next checkpoint's weights in a background thread while the current one is measured.

A sweep alternates loading a checkpoint and measuring it; the two use different resources (the disk
or the network, then the CPU or the GPU), so reading checkpoint t+1 while t is measured hides most of
the load. ``Prefetcher`` keeps at most one read in flight and at most one finished read waiting,
which bounds the extra memory to one state dict.

What it reads ahead is only the safetensors file of our own series (``zoo:`` and series
directories): reading it releases the GIL for the I/O and builds nothing but tensors. The state dict
goes into the model on the caller's thread (``phasescope.models.loading.load_model``). Other model
kinds build their model inside transformers' or TransformerLens's loaders and load as before.

Prefetched weights never change a result, and never stand in for other files: the read records the
step's weights identity (``phasescope.models.identity``) before and after it, and ``take`` hands the
state dict out only when the files still have that identity. A read that failed, went stale or was
asked for a different step is dropped, and the caller loads the step the normal way, so an error in
the thread surfaces (from that normal load) only when the step is actually measured.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phasescope.config import Settings, get_settings

if TYPE_CHECKING:
    from phasescope.models.loading import ModelRef

__all__ = ["PREFETCH_KINDS", "Prefetched", "Prefetcher"]

log = logging.getLogger("phasescope.models.prefetch")

PREFETCH_KINDS = ("zoo", "series")
"""Model kinds whose checkpoints are read ahead: one safetensors file per step, read without a model."""


class _Stale(Exception):
    """The files changed while they were read."""


@dataclass
class Prefetched:
    """One checkpoint's weights read ahead.

    Attributes:
        spec: the model string.
        step: the training step.
        identity: the step's weights identity while it was read (the same before and after the read).
        state: the state dict, in memory (not a view of the file).
    """

    spec: str
    step: int
    identity: str
    state: dict[str, Any]


def _identity(ref: ModelRef, step: int, settings: Settings) -> str:
    from phasescope.models.identity import weights_identity

    return weights_identity(ref, [step], settings)[step]


def _read(spec: str, step: int, settings: Settings) -> Prefetched:
    """Read one step's state dict (runs on the prefetch thread)."""
    from phasescope.models.loading import parse_model_spec
    from phasescope.models.series import load_series_state_dict, read_manifest

    ref = parse_model_spec(spec, settings)
    assert ref.path is not None and ref.kind in PREFETCH_KINDS
    before = _identity(ref, step, settings)
    mapped = load_series_state_dict(ref.path, step, read_manifest(ref.path), roots=settings.allowed_roots)
    # safetensors maps the file and reads pages only when a tensor is touched: copy now, on this
    # thread (torch releases the GIL while it copies), so the caller gets weights already in memory
    # and the file's mapping is closed before the identity is read again.
    state = {name: tensor.clone() for name, tensor in mapped.items()}
    del mapped
    after = _identity(ref, step, settings)
    if after != before:
        raise _Stale(f"identity {before[:18]}… became {after[:18]}… while it was read")
    return Prefetched(spec, step, after, state)


class Prefetcher:
    """At most one checkpoint read ahead, on one background thread.

    ``start`` asks for a step, ``take`` collects it when that step is loaded. Counters say what
    happened to the reads: ``used`` (taken), ``dropped`` (never asked for, or another step asked
    first), ``stale`` (the files changed), ``failed`` (the read raised).
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._key: tuple[str, int] | None = None
        self._future: Future[Prefetched] | None = None
        self._lock = threading.Lock()
        self.used = 0
        self.dropped = 0
        self.stale = 0
        self.failed = 0

    @property
    def pending(self) -> tuple[str, int] | None:
        """``(model, step)`` read ahead or being read, or None."""
        return self._key

    def start(self, spec: str, step: int, settings: Settings | None = None) -> bool:
        """Begin reading ``spec`` at ``step`` in the background; another pending read is dropped.

        Returns:
            True when the step is being read (or was already), False when its model kind is not read
            ahead or the model string does not resolve (the normal load will say why, if it is used).
        """
        from phasescope.errors import PhasescopeError
        from phasescope.models.loading import parse_model_spec

        settings = settings or get_settings()
        with self._lock:
            if self._key == (spec, step):
                return True
        try:
            kind = parse_model_spec(spec, settings).kind
        except (PhasescopeError, OSError):
            return False
        if kind not in PREFETCH_KINDS:
            return False
        with self._lock:
            self._drop_locked()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
            # One thread: a dropped read still in flight finishes before the next one starts, so no
            # more than one state dict is ever being read or waiting.
            self._future = self._executor.submit(_read, spec, step, settings)
            self._key = (spec, step)
        return True

    def wait(self) -> None:
        """Block until the pending read (if any) has finished; its result is kept for ``take``."""
        future = self._future
        if future is not None:
            future.exception()

    def take(self, spec: str, step: int, settings: Settings | None = None) -> dict[str, Any] | None:
        """The state dict of ``spec`` at ``step`` when it was read ahead and its files still match.

        Waits for a read in flight. Any pending read of another step is dropped.

        Returns:
            The state dict, or None: not read ahead, the read failed, or the files changed since
            (the caller then loads the step the normal way).
        """
        settings = settings or get_settings()
        with self._lock:
            if self._key != (spec, step):
                self._drop_locked()
                return None
            future, self._future, self._key = self._future, None, None
        assert future is not None
        try:
            got = future.result()
            now = self._current_identity(spec, step, settings)
        except _Stale as exc:
            self.stale += 1
            log.info("prefetch of %s step %s discarded: %s", spec, step, exc)
            return None
        except Exception as exc:  # the normal load runs again and raises what is really wrong
            self.failed += 1
            log.info("prefetch of %s step %s failed (%s); loading it now", spec, step, exc)
            return None
        if now != got.identity:
            self.stale += 1
            log.info(
                "prefetch of %s step %s discarded: its files changed after they were read "
                "(identity %s… is now %s…)",
                spec,
                step,
                got.identity[:18],
                now[:18],
            )
            return None
        self.used += 1
        return got.state

    def drop(self) -> None:
        """Forget the pending read (a read in flight finishes on its thread and is freed)."""
        with self._lock:
            self._drop_locked()

    def close(self) -> None:
        """Drop the pending read and stop the thread (waits for a read in flight: one at most)."""
        with self._lock:
            self._drop_locked()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _drop_locked(self) -> None:
        if self._future is not None:
            self._future.cancel()  # a read not started yet never starts
            self.dropped += 1
        self._future, self._key = None, None

    @staticmethod
    def _current_identity(spec: str, step: int, settings: Settings) -> str:
        from phasescope.models.loading import parse_model_spec

        return _identity(parse_model_spec(spec, settings), step, settings)
