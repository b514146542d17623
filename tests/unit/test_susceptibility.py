"""χ peaks (phasescope.phases.susceptibility) and the findings built on per-prompt rows, on synthetic
tidy tables that follow the contract of docs/measures.md ("Uncertainties"): ``q`` with ``se``,
``q_prompt`` (index = prompt) and ``q_chi`` (``N̄ · Var_prompts``, bootstrap ``se``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phasescope.phases.findings import find_transitions
from phasescope.phases.susceptibility import chi_peak, locate_peak, susceptibility_peaks
from phasescope.responses import Findings, marked_transition

STEPS = np.arange(0, 1001, 25)  # with step 0, which the findings leave out
X = np.log(np.maximum(STEPS, 1))
UNITS = 16.0  # units one prompt averages over (its tokens, its queries): χ's factor


def contract_rows(
    measure: str,
    quantity: str,
    per_prompt: np.ndarray,
    *,
    layer: int | None = None,
    head: int | None = None,
    prompts: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """``q`` (with ``se``), ``q_prompt`` and ``q_chi`` (with a bootstrap ``se``) from ``[checkpoint, prompt]``."""
    rng = np.random.default_rng(seed)
    n_ckpt, n = per_prompt.shape
    prompts = np.arange(n) if prompts is None else prompts
    picks = rng.integers(0, n, (200, n))
    chi = UNITS * per_prompt.var(1, ddof=1)
    chi_se = (UNITS * per_prompt[:, picks].var(-1, ddof=1)).std(1, ddof=1)
    base = {"measure": measure, "layer": layer, "head": head}
    parts = [
        pd.DataFrame(
            {**base, "checkpoint": STEPS, "quantity": quantity, "value": per_prompt.mean(1)}
            | {"se": per_prompt.std(1, ddof=1) / np.sqrt(n)}
        ),
        pd.DataFrame(
            {
                **base,
                "checkpoint": np.repeat(STEPS, n),
                "quantity": f"{quantity}_prompt",
                "index": np.tile(prompts, n_ckpt),
                "value": per_prompt.ravel(),
            }
        ),
        pd.DataFrame(
            {**base, "checkpoint": STEPS, "quantity": f"{quantity}_chi", "value": chi, "se": chi_se}
        ),
    ]
    return pd.concat(parts, ignore_index=True).astype({"layer": "Int64", "head": "Int64", "index": "Int64"})


def step(mid: float, width: float, before: float, after: float) -> np.ndarray:
    return before + (after - before) / (1 + np.exp(-(X - np.log(mid)) / width))


def bump(at: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((X - np.log(at)) / width) ** 2)


def per_prompt(mean: np.ndarray, sd: np.ndarray, n: int, seed: int) -> np.ndarray:
    sd = np.broadcast_to(np.asarray(sd, float), mean.shape)
    return mean[:, None] + sd[:, None] * np.random.default_rng(seed).standard_normal((len(mean), n))


def test_the_parabola_vertex_is_exact_and_an_edge_maximum_stays_at_the_edge() -> None:
    x = np.log(np.array([10.0, 30, 50, 90, 200, 400]))
    vertex = np.log(70.0)
    chi = 5 - (x - vertex) ** 2  # a parabola in ln t on an uneven grid: the vertex is exact
    assert float(locate_peak(x, chi)) == pytest.approx(vertex, abs=1e-12)
    rising = np.linspace(0, 1, len(x))
    both = locate_peak(x, np.stack([chi, rising], axis=1))
    assert both[0] == pytest.approx(vertex, abs=1e-12) and both[1] == x[-1]


def test_a_variance_peak_at_a_known_step_is_found_there_and_is_significant() -> None:
    mean = step(480, 0.08, 4.0, 1.0)
    sd = 0.3 + 0.9 * bump(500, 0.08)  # the prompts disagree most at step 500
    values = per_prompt(mean, sd, 64, seed=1)[1:]
    chi = UNITS * values.var(1, ddof=1)
    se = np.full(len(chi), np.nan)  # no stored se: the prompt bootstrap's spread stands in
    peak = chi_peak(("loss", None, None), STEPS[1:], chi, se, per_prompt=values, n_boot=200)
    assert peak.significant and not peak.censored and peak.in_window is None
    assert peak.peak_ci_lo <= 500 <= peak.peak_ci_hi and abs(peak.peak_step - 500) <= 25
    assert peak.peak_ci_hi - peak.peak_ci_lo < 150
    assert peak.peak_value > peak.baseline and peak.method == "prompt bootstrap (n=200)"


@pytest.mark.parametrize("seed", range(6))
def test_flat_variance_has_no_significant_peak(seed: int) -> None:
    """The 1-layer control's case: χ only fluctuates around one level (here while the mean steps)."""
    table = contract_rows(
        "loss", "loss", per_prompt(step(480, 0.08, 4.0, 1.0), np.full(len(STEPS), 0.4), 64, seed)
    )
    (peak,) = find_transitions(table, n_boot=100, seed=seed)["susceptibility"]
    assert not peak["significant"], peak
    assert peak["transition_step"] is not None and peak["in_window"] is not None


def test_findings_report_the_prompt_bootstrap_the_chi_peak_in_the_window_and_the_contract_keys() -> None:
    parts = [
        contract_rows(
            "loss", "loss", per_prompt(step(480, 0.08, 4.0, 1.0), 0.3 + 0.9 * bump(500, 0.08), 64, 2)
        )
    ]
    for head in range(4):  # layer 1: head 2 forms an induction head (with a χ peak), the others stay flat
        rising = head == 2
        mean = step(470, 0.08, 0.1, 0.8) if rising else np.full(len(STEPS), 0.1)
        sd = 0.05 + (0.2 * bump(480, 0.08) if rising else 0.01 * head)
        parts.append(
            contract_rows("heads", "induction_score", per_prompt(mean, sd, 64, 10 + head), layer=1, head=head)
        )
    # A split quantity: the test loss on prompts 40–63 only (the contract's split rows).
    test_loss = per_prompt(step(490, 0.08, 4.0, 2.0), np.full(len(STEPS), 0.3), 24, 3)
    parts.append(contract_rows("loss", "loss_test", test_loss, prompts=np.arange(40, 64)))
    found = find_transitions(pd.concat(parts, ignore_index=True), n_boot=100)

    by = {(t["quantity"], t["head"]): t for t in found["transitions"]}
    loss, score, split = by[("loss", None)], by[("induction_score", 2)], by[("loss_test", None)]
    for t in (loss, score, split):
        assert t["uncertainty_method"] == "prompt bootstrap (n=100)"
        assert t["step_ci_lo"] <= t["step"] <= t["step_ci_hi"]
    # (Coverage is test_phases' business; one draw is only near the truth.)
    assert abs(loss["step"] - 480) <= 25 and abs(split["step"] - 490) <= 25
    assert ("induction_score", 0) not in by

    chi = {(p["quantity"], p["head"]): p for p in found["susceptibility"]}
    # Heads reported: the one with a transition, and the layer's largest χ (the same head here).
    assert set(chi) == {("loss", None), ("induction_score", 2), ("loss_test", None)}
    assert chi[("loss", None)]["significant"] and chi[("loss", None)]["in_window"] is True
    assert chi[("loss", None)]["peak_ci_lo"] <= 500 <= chi[("loss", None)]["peak_ci_hi"]
    assert chi[("induction_score", 2)]["significant"] and chi[("induction_score", 2)]["in_window"] is True
    assert not chi[("loss_test", None)]["significant"]
    keys = {"quantity", "layer", "head", "peak_step", "peak_ci_lo", "peak_ci_hi", "peak_value", "peak_se"}
    keys |= {"baseline", "significant", "in_window", "transition_step"}
    assert keys <= set(chi[("loss", None)])
    exponent_keys = {
        "quantity",
        "layer",
        "head",
        "side",
        "b",
        "b_ci_lo",
        "b_ci_hi",
        "n_points",
        "supported",
        "reason",
    }
    assert found["exponents"] and all(exponent_keys <= set(e) for e in found["exponents"])
    assert {e["side"] for e in found["exponents"]} == {"before", "after"}

    text = found["summary"]
    assert f"at step {loss['step']:.0f} [{loss['step_ci_lo']:.0f}, {loss['step_ci_hi']:.0f}]" in text
    assert "χ of the loss peaks at step" in text and "inside the transition window" in text
    assert "χ of the test loss has no significant peak" in text
    json.dumps(found)  # JSON-able for the results store
    parsed = Findings.model_validate({**found, "marked": marked_transition(found["transitions"])})
    assert parsed.susceptibility[0].quantity == found["susceptibility"][0]["quantity"]
    assert parsed.transitions[0].step_ci_lo == found["transitions"][0]["step_ci_lo"]


def test_only_heads_worth_reporting_are_listed() -> None:
    rows = []
    for layer in range(2):
        for head in range(3):
            chi = 1.0 + (layer + 1) * head * bump(400 + 100 * head, 0.1)
            rows.append(
                pd.DataFrame(
                    {"checkpoint": STEPS, "layer": layer, "head": head, "quantity": "induction_score_chi"}
                    | {"value": chi, "se": 0.05}
                )
            )
    peaks = susceptibility_peaks(pd.concat(rows), {}, [], n_boot=50)
    # No transitions: per layer, the head with the largest χ only.
    assert [(p.layer, p.head) for p in peaks] == [(0, 2), (1, 2)]
    assert all(p.significant and p.method.startswith("parametric") for p in peaks)
    assert abs(peaks[0].peak_step - 600) <= 25 and peaks[0].in_window is None
