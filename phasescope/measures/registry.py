"""The measure registry: one entry per measure, consulted by everything that names measures.

A measure is declared once, here, with ``register_measure``: its name, its kind, what one job of it
costs, the ``MeasureParams`` fields it reads, the quantities it emits (with labels and units), its
order parameters for phase detection, whether it runs by default, the dashboard tab that shows it,
and its compute function by dotted name. The readers:

=====================================  =========================================================
request validation, ``"all"``          ``phasescope.schemas`` (``measure_names``, ``default_measures``)
worker and CLI dispatch                ``phasescope.analysis.run`` (``Measure.function``, ``kind``)
job cost and timeout                   ``phasescope.service.cost`` (``Measure.cost``, ``cost_params``)
reuse-cache keys                       ``phasescope.service.reuse`` (``Measure.params``)
findings and their sentences           ``phasescope.phases`` (``order_parameters``, ``quantity``)
axis titles, menus, tabs               the dashboard (``label``, ``quantities``, ``measures(tab=...)``)
``phasescope analyze --help``          ``phasescope.cli``
=====================================  =========================================================

This is Dash's ``page_registry`` filled by ``register_page``, or TransformerLens's
``OFFICIAL_MODEL_NAMES``: one table that everything reads, not lists kept in step by hand. The
built-in measures are in ``phasescope.measures.builtin`` and are registered the first time the
registry is read. Importing this module imports neither torch nor pandas (the backend and the
dashboard read it): compute functions are resolved only when a worker calls them.

>>> get_measure("thermo").kind
'activation'
>>> label("thermo.beta_star")
'β* (peak of C(β), inverse temperature)'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # a cost model reads the request's parameters; schemas imports this module
    import pandas as pd

    from phasescope.schemas import MeasureParams

__all__ = [
    "KINDS",
    "Kind",
    "Measure",
    "OrderParameter",
    "Quantity",
    "TOKENS_PER_UNIT",
    "WorkSizes",
    "default_measures",
    "get_measure",
    "label",
    "measure_names",
    "measures",
    "order_parameters",
    "order_quantity",
    "quantities",
    "register_measure",
    "registered",
    "unregister_measure",
]

Kind = Literal["activation", "weights", "landscape", "cross-checkpoint", "series"]
KINDS: tuple[Kind, ...] = ("activation", "weights", "landscape", "cross-checkpoint", "series")
"""What a measure reads, which decides how a checkpoint's jobs prepare for it:

- ``activation``: the attention scores (and logits) of the one forward pass with hooks they share;
- ``weights``: the weights only, no forward pass;
- ``landscape``: the loss on the first ``MeasureParams.heavy_prompts`` prompts, many times over;
- ``cross-checkpoint``: this checkpoint and another one of the same series.
- ``series``: every checkpoint of the analysis at once, computed once after the per-checkpoint
  measures (a trajectory's principal components).
"""

TOKENS_PER_UNIT = 16 * 64
"""Tokens in one work unit: one forward pass of the default inputs (16 prompts × 64 tokens)."""


@dataclass(frozen=True)
class WorkSizes:
    """A request's sizes, which every cost model is written in (docs: ``phasescope.service.cost``).

    Attributes:
        prompts: prompts per checkpoint ``P``.
        seq_len: tokens per prompt ``T``.
        heavy_prompts: prompts of the landscape measures, ``min(heavy_prompts, P)``.
    """

    prompts: int
    seq_len: int
    heavy_prompts: int

    @property
    def tok(self) -> float:
        """Forward passes' worth of tokens, ``P·T / 1024``."""
        return self.prompts * self.seq_len / TOKENS_PER_UNIT

    @property
    def att(self) -> float:
        """Attention score elements relative to 16 × 64² per head, ``tok · T / 64``."""
        return self.tok * self.seq_len / 64

    @property
    def heavy(self) -> float:
        """One forward pass over the landscape prompts, ``h·T / 1024``."""
        return self.heavy_prompts * self.seq_len / TOKENS_PER_UNIT


CostModel = Callable[[WorkSizes, "MeasureParams"], float]
"""Work units of one job of a measure (one checkpoint), from the request's sizes and parameters."""


@dataclass(frozen=True)
class Quantity:
    """One quantity a measure emits (a value of the results table's ``quantity`` column).

    Attributes:
        name: the ``quantity`` value, e.g. ``"beta_star"``.
        label: what it is in a few words, e.g. ``"β* (peak of C(β), inverse temperature)"``.
        unit: its unit, ``""`` when dimensionless or already said by the label.
        dims: the table's coordinate columns it varies along besides ``checkpoint``.
        offered: the dashboard menus that offer it: ``"overview"`` (colours the phase diagram; needs
            ``dims == ("layer", "head")``), ``"compare"`` (the comparison page's curves).
        short: its name in findings sentences (default: ``name`` with spaces).
        as_change: findings give its change in ``unit`` ("loss −2.6 nats") rather than its values
            before and after ("β* 1.1 → 0.63").
        digest: ``(how, last_layer)`` for a column of the per-checkpoint digest
            (``phasescope.phases.digest``): its rows reduced with ``how`` (``"mean"``, ``"max"``,
            ``"median"``), over the last layer only when ``last_layer``; None: not in the digest.
    """

    name: str
    label: str
    unit: str = ""
    dims: tuple[str, ...] = ("layer", "head")
    offered: tuple[Literal["overview", "compare"], ...] = ()
    short: str = ""
    as_change: bool = False
    digest: tuple[str, bool] | None = None

    @property
    def title(self) -> str:
        """An axis title: the label with its unit, e.g. ``"loss (nats)"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def words(self) -> str:
        """Its name in findings sentences."""
        return self.short or self.name.replace("_", " ")


@dataclass(frozen=True)
class OrderParameter:
    """A series the findings test for transitions: one value per checkpoint per (layer, head).

    Attributes:
        measure: the measure that emits it.
        quantity: the quantity.
        where: extra row filter as ``(column, value)`` pairs, e.g. ``(("index", 0),)`` for the top
            Hessian eigenvalue.
        kinds: the transition shapes fitted (``phasescope.phases.detect``): ``("step",)`` for
            quantities that change level, ``("step", "peak")`` for those that rise and fall back.
    """

    measure: str
    quantity: str
    where: tuple[tuple[str, Any], ...] = ()
    kinds: tuple[str, ...] = ("step",)

    @property
    def key(self) -> str:
        """``"measure.quantity"``."""
        return f"{self.measure}.{self.quantity}"

    def rows(self, table: pd.DataFrame) -> pd.DataFrame:
        """This order parameter's rows of a tidy results table."""
        rows = table[(table["measure"] == self.measure) & (table["quantity"] == self.quantity)]
        for column, value in self.where:
            if column in rows:
                rows = rows[rows[column] == value]
        return rows


@dataclass(frozen=True)
class Measure:
    """One measure, as every reader sees it.

    Attributes:
        name: what requests, tables and URLs call it (lowercase, e.g. ``"thermo"``).
        kind: what it reads (``KINDS``).
        compute: its compute function as ``"module:function"``, called with a
            ``phasescope.analysis.adapters.MeasureInput`` and returning its tidy table; resolved lazily.
        summary: one line saying what it measures (CLI help, docs).
        cost: work units of one job (``phasescope.service.cost``).
        cost_params: the ``MeasureParams`` fields its cost grows with.
        params: the ``MeasureParams`` fields it reads (its reuse-cache key names exactly these).
        quantities: what it emits.
        order_parameters: ``(quantity, where, kinds)`` per order parameter, as in ``OrderParameter``.
        default: whether a request without ``measures`` runs it.
        tab: the dashboard tab that shows it (one of the dashboard's tabs, docs/dashboard.md).
        reads_logits: an activation measure that needs the forward pass's logits too.
        hooks: TransformerLens hook suffixes an activation measure reads besides the scores, e.g.
            ``"hook_resid_pre"`` or ``"mlp.hook_pre"``: the shared forward pass captures
            ``blocks.<layer>.<suffix>`` on every layer that has it, only when a requested measure
            names it (``phasescope.analysis.run.capture_forward``).
        docs: the section of docs/measures.md that defines it.
    """

    name: str
    kind: Kind
    compute: str
    summary: str
    cost: CostModel
    quantities: tuple[Quantity, ...]
    cost_params: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    order_parameters: tuple[OrderParameter, ...] = ()
    default: bool = False
    tab: str = "overview"
    reads_logits: bool = False
    hooks: tuple[str, ...] = ()
    docs: str = ""
    _by_name: dict[str, Quantity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"measure {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if ":" not in self.compute:
            raise ValueError(
                f"measure {self.name!r}: compute must be 'module:function', got {self.compute!r}"
            )
        by_name = {q.name: q for q in self.quantities}
        if len(by_name) != len(self.quantities):
            raise ValueError(f"measure {self.name!r}: a quantity is declared twice")
        for op in self.order_parameters:
            if op.measure != self.name or op.quantity not in by_name:
                raise ValueError(
                    f"measure {self.name!r}: order parameter {op.key} is not one of its quantities"
                )
        for q in self.quantities:
            if "overview" in q.offered and q.dims != ("layer", "head"):
                raise ValueError(f"{self.name}.{q.name}: only per-head quantities colour the overview")
        object.__setattr__(self, "_by_name", by_name)

    def quantity(self, name: str) -> Quantity:
        """The declared quantity ``name`` (KeyError when it emits none of that name)."""
        return self._by_name[name]

    def function(self) -> Callable[..., pd.DataFrame]:
        """The compute function, imported now (this is where torch gets imported)."""
        module, _, attr = self.compute.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


_REGISTRY: dict[str, Measure] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # first: the module registers through register_measure
        importlib.import_module("phasescope.measures.builtin")


def _entries() -> dict[str, Measure]:
    _load_builtins()
    return _REGISTRY


def register_measure(measure: Measure, *, replace: bool = False) -> Measure:
    """Add a measure to the registry; every reader sees it from now on.

    Args:
        measure: its entry.
        replace: allow replacing an entry of the same name (else that is a ValueError).

    Returns:
        The entry, so a module can keep it (``ENTROPY = register_measure(Measure(...))``).
    """
    entries = _entries()
    if measure.name in entries and not replace:
        raise ValueError(f"a measure named {measure.name!r} is already registered")
    if not measure.name.isidentifier() or measure.name != measure.name.lower() or measure.name == "all":
        raise ValueError(f"measure names are lowercase identifiers other than 'all', got {measure.name!r}")
    entries[measure.name] = measure
    return measure


def unregister_measure(name: str) -> Measure:
    """Remove a measure (tests that registered one); returns its entry."""
    return _entries().pop(name)


@contextmanager
def registered(*entries: Measure) -> Iterator[tuple[Measure, ...]]:
    """Register ``entries`` for the ``with`` block only, e.g. a test's fake measure.

    Readers that keep what they read (an app built inside the block) keep it after the block too.
    """
    added: list[str] = []
    try:
        for entry in entries:
            register_measure(entry)
            added.append(entry.name)
        yield entries
    finally:
        for name in added:
            _REGISTRY.pop(name, None)


def measures(*, kind: str | None = None, tab: str | None = None) -> tuple[Measure, ...]:
    """Every registered measure in registration order, optionally of one kind or on one tab."""
    return tuple(
        m for m in _entries().values() if (kind is None or m.kind == kind) and (tab is None or m.tab == tab)
    )


def measure_names(*, kind: str | None = None) -> tuple[str, ...]:
    """The registered measures' names (what ``"all"`` asks for), in registration order."""
    return tuple(m.name for m in measures(kind=kind))


def default_measures() -> tuple[str, ...]:
    """The measures a request without ``measures`` runs."""
    return tuple(m.name for m in measures() if m.default)


def get_measure(name: str) -> Measure:
    """The entry of ``name``.

    Raises:
        KeyError: no measure of that name is registered (the message lists those that are).
    """
    entries = _entries()
    if name not in entries:
        raise KeyError(f"unknown measure {name!r}; registered: {', '.join(entries)}")
    return entries[name]


def order_parameters(measures_run: Iterable[str] | None = None) -> tuple[OrderParameter, ...]:
    """Every registered order parameter, in registration order (of ``measures_run`` only, if given)."""
    wanted = None if measures_run is None else set(measures_run)
    return tuple(op for m in measures() if wanted is None or m.name in wanted for op in m.order_parameters)


def quantities(
    *, offered: str | None = None, measures_run: Iterable[str] | None = None
) -> tuple[tuple[str, Quantity], ...]:
    """``("measure.quantity", Quantity)`` pairs in registration order.

    Args:
        offered: only those a dashboard menu offers (``"overview"`` or ``"compare"``).
        measures_run: only those of these measures.
    """
    wanted = None if measures_run is None else set(measures_run)
    return tuple(
        (f"{m.name}.{q.name}", q)
        for m in measures()
        if wanted is None or m.name in wanted
        for q in m.quantities
        if offered is None or offered in q.offered
    )


def _lookup(key: str) -> Quantity | None:
    measure, _, name = key.partition(".")
    entry = _entries().get(measure)
    if entry is None or name not in entry._by_name:
        return None
    return entry._by_name[name]


def label(key: str) -> str:
    """The axis title of ``"measure.quantity"`` (label and unit); the key itself when undeclared."""
    quantity = _lookup(key)
    return quantity.title if quantity else key


def order_quantity(name: str) -> Quantity | None:
    """The quantity of the order parameter named ``name`` (a ``Transition.quantity``), if any."""
    for op in order_parameters():
        if op.quantity == name:
            return get_measure(op.measure).quantity(name)
    return None
