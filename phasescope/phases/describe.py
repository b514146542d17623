"""Phase transitions in words: which transitions move together, and one sentence per group.

Reads the ``Transition`` results of ``phasescope.phases.detect`` (pure numpy, no torch), e.g. "layer 1 heads
0–3: induction transition at step 475 ± 25 (loss −2.6 nats, induction score 0.14 → 0.59); β* 1.1 →
0.63; sharpness peaks at 500".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from phasescope.measures.registry import Quantity, order_quantity
from phasescope.phases.detect import Transition

__all__ = ["co_moving", "summarise"]

# (falls, rises): the order parameters whose improvement means the model fits its training set, and
# those that mean it generalises to held-out data (tasks with a split, e.g. grokking).
_TRAIN = ({"loss_train"}, {"accuracy_train"})
_TEST = ({"loss_test"}, {"accuracy_test"})


def _improves(group: list[Transition], which: tuple[set[str], set[str]]) -> bool:
    falls, rises = which
    return any(
        t.kind == "step" and ((t.quantity in falls and t.size < 0) or (t.quantity in rises and t.size > 0))
        for t in group
    )


def _names(groups: list[list[Transition]]) -> list[str]:
    """Each group's name: induction transition, memorisation, generalisation (grokking), or transition.

    Grokking is two transitions: the training set is fitted first (memorisation), the held-out set
    much later (generalisation). A group that improves both at once is an ordinary transition.
    """
    train = [_improves(g, _TRAIN) and not _improves(g, _TEST) for g in groups]
    test = [_improves(g, _TEST) and not _improves(g, _TRAIN) for g in groups]
    names = []
    for i, group in enumerate(groups):
        induction = [t for t in group if t.quantity == "induction_score" and t.kind == "step"]
        if induction and np.mean([t.size for t in induction]) > 0:
            names.append("induction transition")
        elif train[i] and any(test[i + 1 :]):
            names.append("memorisation")
        elif test[i] and any(train[:i]):
            names.append("generalisation (grokking) transition")
        else:
            names.append("transition")
    return names


def _coincide(a: Transition, b: Transition) -> bool:
    if abs(a.step - b.step) <= max(a.step_hi - a.step_lo, b.step_hi - b.step_lo):
        return True
    # A peak (sharpness, LLC) belongs to a step whose window it falls in, however wide.
    for p, s in ((a, b), (b, a)):
        if p.kind == "peak" and s.kind == "step" and s.window_lo <= p.step <= s.window_hi:
            return True
    return False


def co_moving(transitions: Iterable[Transition]) -> list[list[Transition]]:
    """Group transitions that happen together.

    Two transitions coincide when their steps differ by at most one checkpoint interval (the larger
    of their ``step_hi − step_lo``), or when one is a peak inside the other's window. Groups are the
    connected sets of coinciding transitions, ordered by their first step.
    """
    items = sorted(transitions, key=lambda t: t.step)
    group_of = list(range(len(items)))

    def root(i: int) -> int:
        while group_of[i] != i:
            i = group_of[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if _coincide(items[i], items[j]):
                group_of[root(j)] = root(i)
    groups: dict[int, list[Transition]] = {}
    for i, t in enumerate(items):
        groups.setdefault(root(i), []).append(t)
    return sorted(groups.values(), key=lambda g: g[0].step)


def _ranges(values: list[int]) -> str:
    values = sorted(set(values))
    if len(values) > 1 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(str(v) for v in values)


def _scope(layer: int | None, heads: list[int]) -> str:
    parts = [] if layer is None else [f"layer {layer}"]
    if heads:
        parts.append(f"head{'s' if len(heads) > 1 else ''} {_ranges(heads)}")
    return " ".join(parts)


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 1 else f"{v:.3g}"


def summarise(transitions: Iterable[Transition]) -> str:
    """One sentence per group of co-moving transitions, e.g. ``"layer 1 heads 0–3: induction transition
    at step 475 ± 25 (loss −2.6 nats, induction score 0.14 → 0.59); β* 1.1 → 0.63; sharpness peaks at
    500"``; "no transition" when there is none.
    """
    sentences = []
    groups = co_moving(transitions)
    for group, name in zip(groups, _names(groups), strict=True):
        # Collapse heads of one (quantity, layer, kind) into one item with their mean values.
        items: dict[tuple[str, int | None, str], list[Transition]] = {}
        for t in group:
            items.setdefault((t.quantity, t.layer, t.kind), []).append(t)
        steps = [t for t in group if t.kind == "step"] or group
        centre = float(np.median([t.step for t in steps]))
        unc = float(np.nanmedian([t.uncertainty for t in steps])) if steps else math.nan
        induction = [ts for (q, _, k), ts in items.items() if q == "induction_score" and k == "step"]
        lead = induction[0] if induction else next(iter(items.values()))
        scope = _scope(lead[0].layer, [t.head for t in lead if t.head is not None])
        if all(t.coarse for t in steps):
            when = f"between steps {min(t.step_lo for t in steps)} and {max(t.step_hi for t in steps)}"
        else:
            spread = "" if math.isnan(unc) else (f" ± {unc:.0f}" if unc >= 0.5 else " ± <1")
            when = f"at step {centre:.0f}{spread}"
        inner, outer = [], []
        for (q, layer, kind), ts in items.items():
            # How the registry words the order parameter: its short name, and whether its change in
            # its unit says more than its values ("loss −2.6 nats" against "β* 1.1 → 0.63").
            declared = order_quantity(q) or Quantity(q, q)
            label, change = declared.words, declared.as_change
            before, after = np.mean([t.before for t in ts]), np.mean([t.after for t in ts])
            where = _scope(layer, [t.head for t in ts if t.head is not None])
            if kind == "peak":
                at = np.median([t.step for t in ts])
                text = f"{label} peaks at {at:.0f} ({_fmt(before)} → {_fmt(np.mean([t.peak for t in ts]))} → {_fmt(after)})"  # type: ignore[arg-type]
            elif change:
                text = f"{label} {after - before:+.2g} {declared.unit}".rstrip().replace("-", "−")
            else:
                text = f"{label} {_fmt(before)} → {_fmt(after)}"
            if ts is lead or change or where in ("", scope):
                inner.append(text) if kind == "step" else outer.append(text)
            else:
                outer.append(f"{where} {text}")
        head = f"{scope}: {name} {when}" if scope else f"{name} {when}"
        sentences.append("; ".join([f"{head} ({', '.join(inner)})" if inner else head, *outer]))
    return ". ".join(sentences) if sentences else "no transition"
