"""Phase transitions in words: which transitions move together, and one sentence per group.

Reads the ``Transition`` results of ``phasescope.phases.detect`` (pure numpy, no torch), e.g. "layer 1 heads
0–3: induction transition at step 475 [455, 500] (loss −2.6 nats at step 480 [460, 505], induction
score 0.14 → 0.59); β* 1.1 → 0.63; sharpness peaks at 500", and the susceptibility peaks and critical
exponents of ``phasescope.phases.susceptibility`` and ``phasescope.phases.exponents`` ("χ of the
induction score (layer 1 head 2) peaks at step 490 [470, 520], inside the transition window").
Every step is said with its 95% interval in brackets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from phasescope.measures.registry import Quantity, order_quantity
from phasescope.phases.detect import Transition
from phasescope.phases.exponents import ExponentFit
from phasescope.phases.susceptibility import SusceptibilityPeak

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
    # Two steps each inside the other's window are one event however dense the checkpoints (with
    # checkpoints 5 steps apart the loss and the induction heads are 10 steps apart, not one interval).
    if (
        a.kind == b.kind == "step"
        and a.window_lo <= b.step <= a.window_hi
        and b.window_lo <= a.step <= b.window_hi
    ):
        return True
    # A peak (sharpness, LLC) belongs to a step whose window it falls in, however wide.
    for p, s in ((a, b), (b, a)):
        if p.kind == "peak" and s.kind == "step" and s.window_lo <= p.step <= s.window_hi:
            return True
    return False


def co_moving(transitions: Iterable[Transition]) -> list[list[Transition]]:
    """Group transitions that happen together.

    Two transitions coincide when their steps differ by at most one checkpoint interval (the larger
    of their ``step_hi − step_lo``), when both are steps and each lies inside the other's window, or
    when one is a peak inside the other's window. Groups are the
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


def _interval(lo: float, hi: float) -> str:
    """`` [lo, hi]`` in whole steps, or nothing when the interval is unknown."""
    return "" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.0f}, {hi:.0f}]"


def _label(quantity: str) -> str:
    declared = order_quantity(quantity) or Quantity(quantity, quantity)
    return declared.words


def _named(quantity: str, layer: int | None, head: int | None) -> str:
    where = _scope(layer, [] if head is None else [head])
    return _label(quantity) + (f" ({where})" if where else "")


def _peak_sentences(peaks: list[SusceptibilityPeak]) -> list[str]:
    """Per (quantity, layer), the significant peak with the largest χ (other heads named); then one
    clause per quantity with no significant peak at all."""
    said = []
    groups: dict[tuple[str, int | None], list[SusceptibilityPeak]] = {}
    for p in peaks:
        if p.significant:
            groups.setdefault((p.quantity, p.layer), []).append(p)
    for ps in groups.values():
        p = max(ps, key=lambda p: p.peak_value)
        text = f"χ of the {_named(p.quantity, p.layer, p.head)} peaks at step {p.peak_step:.0f}"
        text += _interval(p.peak_ci_lo, p.peak_ci_hi)
        if p.in_window is None:
            text += ", with no transition of its own"
        else:
            text += f", {'inside' if p.in_window else 'outside'} the transition window"
        others = sorted(o.head for o in ps if o is not p and o.head is not None)
        if others:
            text += f" (also head{'s' if len(others) > 1 else ''} {_ranges(others)})"
        said.append(text)
    quiet = {p.quantity: p for p in reversed(peaks)}  # the first series of each quantity
    for q, p in quiet.items():
        if not any(o.significant for o in peaks if o.quantity == q):
            said.append(f"χ of the {_named(q, p.layer, p.head)} has no significant peak: {p.reason}")
    return said


def _exponent_sentence(fits: list[ExponentFit]) -> str:
    """The supported exponents (the loss's first, at most three), or why none is supported."""
    supported = sorted((e for e in fits if e.supported), key=lambda e: e.quantity != "loss")
    if not supported:
        first = min(fits, key=lambda e: e.quantity != "loss")
        return (
            f"no critical exponent is supported ({_named(first.quantity, first.layer, first.head)} "
            f"{first.side} the step: {first.reason})"
        )
    parts = [
        f"{_named(e.quantity, e.layer, e.head)} {e.side} the step {e.b:.2g}{_interval_f(e.b_ci_lo, e.b_ci_hi)}"
        for e in supported[:3]
    ]
    return f"critical exponent b ({len(supported)} of {len(fits)} sides supported): " + ", ".join(parts)


def _interval_f(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.2g}, {hi:.2g}]"


def summarise(
    transitions: Iterable[Transition],
    peaks: Iterable[SusceptibilityPeak] = (),
    exponents: Iterable[ExponentFit] = (),
) -> str:
    """One sentence per group of co-moving transitions, then the χ peaks and the exponents.

    E.g. ``"layer 1 heads 0–3: induction transition at step 475 [455, 500] (loss −2.6 nats at step 480
    [460, 505], induction score 0.14 → 0.59); β* 1.1 → 0.63; sharpness peaks at 500. χ of the loss
    peaks at step 490 [470, 520], inside the transition window"``; "no transition" when there is
    nothing to say.

    Args:
        transitions: the transitions found.
        peaks: the χ peaks reported (significant ones get a sentence each, the others one together).
        exponents: the exponent fits (the supported ones are said, else why none is).
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
        # The group's interval: the medians of its members' interval ends (members agree by construction).
        ci = [float(np.median([getattr(t, end) for t in steps])) for end in ("step_ci_lo", "step_ci_hi")]
        induction = [ts for (q, _, k), ts in items.items() if q == "induction_score" and k == "step"]
        # The lead: the layer whose induction score rises most (layer 0 may move a little first).
        lead = (
            max(induction, key=lambda ts: np.mean([t.size for t in ts]))
            if induction
            else next(iter(items.values()))
        )
        scope = _scope(lead[0].layer, [t.head for t in lead if t.head is not None])
        if all(t.coarse for t in steps):
            when = f"between steps {min(t.step_lo for t in steps)} and {max(t.step_hi for t in steps)}"
        else:
            when = f"at step {centre:.0f}{_interval(*ci)}"
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
                if len(ts) == 1 and not ts[0].coarse:  # one series: its own step and interval
                    t = ts[0]
                    text += f" at step {t.step:.0f}{_interval(t.step_ci_lo, t.step_ci_hi)}"
            else:
                text = f"{label} {_fmt(before)} → {_fmt(after)}"
            if ts is lead or change or where in ("", scope):
                inner.append(text) if kind == "step" else outer.append(text)
            else:
                outer.append(f"{where} {text}")
        head = f"{scope}: {name} {when}" if scope else f"{name} {when}"
        sentences.append("; ".join([f"{head} ({', '.join(inner)})" if inner else head, *outer]))
    said = _peak_sentences(list(peaks))
    fits = list(exponents)
    if fits:
        said.append(_exponent_sentence(fits))
    return ". ".join((sentences or ["no transition"]) + said)
