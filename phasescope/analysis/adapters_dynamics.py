"""Training dynamics: the compute functions of ``trajectory`` and ``trajectory_pca``, and how they read
other checkpoints' weights.

``trajectory`` (kind ``cross-checkpoint``) compares the checkpoint with its neighbours in the
analysis's own sorted step list: the previous analysed step, the one before it, and the first one
(θ_0). They arrive as ``Neighbours`` (``MeasureInput.neighbours``): ``run_local`` keeps them from its
loop; a worker reads them with ``read_params``. ``trajectory_pca`` (kind ``series``) reads every
analysed checkpoint at once through a ``SeriesReader`` (``MeasureInput.series``), one parameter tensor
of all checkpoints at a time.

Weights of other steps are read like ``ModelCache`` reads them: model strings through
``parse_model_spec`` (the model roots), our series' safetensors files resolved inside the roots,
never a pickle, and, where the analysis recorded weights identities, the files checked against them
before and after the read. Our series (``zoo:`` and series directories) are read as bare tensors,
no model built; other kinds are loaded through ``load_model`` and only their parameters kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from phasescope.config import Settings, get_settings
from phasescope.errors import MeasureError

if TYPE_CHECKING:
    from phasescope.analysis.adapters import MeasureInput

__all__ = [
    "Neighbours",
    "SeriesReader",
    "parameters",
    "read_params",
    "trajectory",
    "trajectory_pca",
]

Params = dict[str, Tensor]


@dataclass
class Neighbours:
    """The parameters a cross-checkpoint measure compares checkpoint ``t`` with, as ``(step, θ)``.

    Attributes:
        prev: the previous analysed step (None at the first).
        prevprev: the one before it (None at the first two).
        init: the first analysed step, θ_0 (at the first step: that step itself).
    """

    prev: tuple[int, Params] | None = None
    prevprev: tuple[int, Params] | None = None
    init: tuple[int, Params] | None = None


def parameters(model: torch.nn.Module) -> Params:
    """A copy of the model's parameters by name (a model in a cache is overwritten by the next load)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _series_path(ref: Any, step: int, settings: Settings) -> Any:
    """The safetensors file of one step of our series, resolved inside the model roots."""
    from phasescope.models.files import resolve_inside_roots
    from phasescope.models.series import checkpoint_filename, read_manifest

    manifest = read_manifest(ref.path)
    if step not in manifest.steps:
        from phasescope.errors import CheckpointNotFound

        raise CheckpointNotFound(
            f"{ref.spec} has no checkpoint at step {step}", field="checkpoints", choices=manifest.steps
        )
    return resolve_inside_roots(ref.path / checkpoint_filename(step), settings.allowed_roots, model=ref.spec)


def _verify(model: str, steps: Sequence[int], weights: Mapping[int, str] | None, settings: Settings) -> None:
    from phasescope.models.identity import verify_step_identity

    for step in steps:
        identity = (weights or {}).get(int(step))
        if identity:
            verify_step_identity(model, int(step), identity, settings)


def read_params(
    model: str,
    step: int,
    like: torch.nn.Module,
    settings: Settings | None = None,
    identity: str | None = None,
) -> Params:
    """The parameters of ``model`` at ``step``, with ``like``'s names, dtype and device.

    Args:
        model: the model string.
        step: the checkpoint.
        like: a loaded model of the same series: its parameter names are read, in its dtype (so
            differences between steps are not differences of precision), on its device.
        settings: paths and roots.
        identity: the step's weights identity recorded by the analysis; checked before and after the
            read (None: not checked).

    Raises:
        ModelLoadError: the files no longer have ``identity``, or lack a parameter of ``like``.
    """
    from phasescope.errors import ModelLoadError
    from phasescope.models.loading import load_model, parse_model_spec
    from phasescope.models.series import load_series_state_dict

    settings = settings or get_settings()
    own = dict(like.named_parameters())
    ref = parse_model_spec(model, settings)
    weights = {int(step): identity} if identity else None
    _verify(model, [step], weights, settings)
    if ref.kind in ("zoo", "series"):
        state = load_series_state_dict(ref.path, step, roots=settings.allowed_roots)
    else:
        dtype = str(next(iter(own.values())).dtype).removeprefix("torch.")
        state = dict(load_model(model, step, "cpu", settings, dtype=dtype).model.named_parameters())
    _verify(model, [step], weights, settings)
    missing = [n for n in own if n not in state]
    if missing:
        raise ModelLoadError(f"{model} step {step} has no parameter {missing[0]}", checkpoint=step)
    return {n: state[n].detach().to(p.device, p.dtype).clone() for n, p in own.items()}


@dataclass
class SeriesReader:
    """Every analysed checkpoint's parameters, read one tensor of all checkpoints at a time.

    Our series are read from their safetensors files tensor by tensor (``safe_open``: a tensor is read
    alone), so at most one parameter of all K checkpoints is in memory. Other model kinds have no such
    files: their checkpoints are loaded once each and their parameters kept (K × D in memory).

    Use as a context manager (it holds the files open). With ``weights``, the files are checked
    against the recorded identities on entry and on exit.

    Attributes:
        model: the model string.
        steps: the analysed steps, ascending.
        like: a loaded model of the series (names, dtype, device).
        settings: paths and roots.
        weights: recorded identities by step (None: not checked).
    """

    model: str
    steps: list[int]
    like: torch.nn.Module
    settings: Settings = field(default_factory=get_settings)
    weights: Mapping[int, str] | None = None
    _files: list[Any] = field(default_factory=list, repr=False)
    _kept: list[Params] | None = field(default=None, repr=False)
    _stack: ExitStack | None = field(default=None, repr=False)

    def __enter__(self) -> SeriesReader:
        from phasescope.models.loading import parse_model_spec

        _verify(self.model, self.steps, self.weights, self.settings)
        ref = parse_model_spec(self.model, self.settings)
        if ref.kind in ("zoo", "series"):
            from safetensors import safe_open

            self._stack = ExitStack()
            self._files = [
                self._stack.enter_context(safe_open(str(_series_path(ref, s, self.settings)), "pt"))
                for s in self.steps
            ]
        else:
            self._kept = [read_params(self.model, s, self.like, self.settings) for s in self.steps]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
        self._files, self._kept, self._stack = [], None, None
        if exc[0] is None:
            _verify(self.model, self.steps, self.weights, self.settings)

    @property
    def names(self) -> list[str]:
        """The parameters read (the model's, in its order)."""
        return [n for n, _ in self.like.named_parameters()]

    def _cast(self, tensor: Tensor, name: str) -> Tensor:
        own = dict(self.like.named_parameters())[name]
        return tensor.to(own.device, own.dtype)

    def read(self, name: str) -> Tensor:
        """Parameter ``name`` at every step, ``[K, *shape]``."""
        if self._kept is not None:
            return torch.stack([p[name] for p in self._kept])
        if not self._files:
            raise RuntimeError("SeriesReader.read outside its with block")
        return torch.stack([self._cast(f.get_tensor(name), name) for f in self._files])

    def params(self, k: int) -> Params:
        """Every parameter at the ``k``-th step."""
        if self._kept is not None:
            return self._kept[k]
        return {n: self._cast(self._files[k].get_tensor(n), n) for n in self.names}


def trajectory(data: MeasureInput) -> pd.DataFrame:
    """Velocity, kinetic energy, distance from θ_0, update cosine (``phasescope.measures.trajectory``)."""
    from phasescope.measures.trajectory import trajectory_table

    near = data.neighbours
    if near is None:
        raise MeasureError(
            "trajectory compares a checkpoint with the analysis's previous ones; it runs in an analysis "
            "(phasescope analyze, the API), not on one checkpoint alone",
            field="measures",
        )
    current = parameters(data.loaded.model)
    init = near.init if near.init is not None else (data.step, current)
    return trajectory_table(current, data.step, prev=near.prev, prevprev=near.prevprev, init=init)


def trajectory_pca(data: MeasureInput) -> pd.DataFrame:
    """The trajectory's principal plane and the loss on it (``phasescope.measures.trajectory_pca``)."""
    from phasescope.measures.trajectory_pca import trajectory_pca_table

    data.require_lm_head("loss on the trajectory's plane")
    reader = data.series
    if reader is None:
        raise MeasureError(
            "trajectory_pca reads every checkpoint of an analysis at once; it runs in an analysis "
            "(phasescope analyze, the API), not on one checkpoint alone",
            field="measures",
        )
    return trajectory_pca_table(
        data.loaded.model,
        data.batch,
        reader.steps,
        reader.read,
        checkpoint_params=reader.params,
        n_points=data.params.landscape_points,
    )
