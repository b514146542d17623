"""Acceptance on the reference series: the induction transition is found where the loss drops, the
sharpness peaks inside it, the induction score's susceptibility peaks inside its window, and the
one-layer control has none of these (docs/zoo.md, the reference phenomenon; docs/measures.md,
"Finding the transition"). zoo:induction-2l and zoo:induction-1l are trained once and cached
(``trained_induction_2l``, ``trained_induction_1l`` in tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope.analysis.run import run_local
from phasescope.config import get_settings
from phasescope.measures.loss import token_losses
from phasescope.measures.sharpness import hessian_operator, lanczos_top
from phasescope.models.loading import ModelCache
from phasescope.models.series import read_manifest
from phasescope.phases.detect import detect_transitions
from phasescope.phases.findings import find_transitions
from phasescope.schemas import InputSpec
from phasescope.zoo import eval_batch

pytestmark = pytest.mark.slow


def _series(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, ModelCache]:
    monkeypatch.setenv("PHASESCOPE_MODEL_ROOTS", str(path.parent))
    get_settings.cache_clear()
    return path, ModelCache()


def _findings(series: Path, data_dir: Path, name: str) -> dict:
    """Loss and heads measured by ``run_local`` on every other checkpoint (21 of 41), then the findings."""
    shutil.copytree(series, data_dir / "zoo" / name)
    steps = [s for s in read_manifest(series).steps if s % 50 == 0]
    table, _ = run_local(f"zoo:{name}", steps, ["loss", "heads"], InputSpec())
    return find_transitions(table)


def _losses(path: Path, cache: ModelCache) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """The repeated-half loss per checkpoint (tidy) and per prompt ``[checkpoint > 0, prompt]``."""
    manifest = read_manifest(path)
    batch = eval_batch(manifest.task, n=64)
    steps, means, per_prompt = [], [], []
    for step in manifest.steps:
        model = cache.get(str(path), step).model
        with torch.no_grad():
            nll, _ = token_losses(model(batch.tokens), batch.tokens)
        mask = batch.target_mask.to(nll.dtype)
        prompt = ((nll * mask).sum(1) / mask.sum(1)).numpy()
        steps.append(step)
        means.append(float((nll * mask).sum() / mask.sum()))
        if step > 0:
            per_prompt.append(prompt)
    table = pd.DataFrame(
        {
            "measure": "loss",
            "checkpoint": steps,
            "layer": pd.NA,
            "head": pd.NA,
            "quantity": "loss",
            "value": means,
        }
    )
    return table, np.array(per_prompt), list(manifest.steps)


def test_induction_2l_transition_at_the_half_way_point_with_the_sharpness_peak_inside(
    trained_induction_2l: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, cache = _series(trained_induction_2l, monkeypatch)
    table, per_prompt, steps = _losses(path, cache)
    found = [t for t in detect_transitions(table, per_prompt=per_prompt, n_boot=50) if t.quantity == "loss"]
    assert len(found) == 1, found
    (t,) = found
    interval = steps[1] - steps[0]

    # Half-way point of the drop: where the loss first crosses the middle between plateau and end.
    loss = table.set_index("checkpoint")["value"].loc[steps[1:]]
    quarter = len(loss) // 4
    middle = (loss.iloc[:quarter].median() + loss.iloc[-quarter:].median()) / 2
    k = int(np.argmax(loss.to_numpy() < middle))
    (s0, s1), (l0, l1) = loss.index[k - 1 : k + 1], loss.iloc[k - 1 : k + 1]
    half_way = s0 + (l0 - middle) / (l0 - l1) * (s1 - s0)
    assert abs(t.step - half_way) <= interval, (t, half_way)
    assert t.size < -1.0 and t.uncertainty_method.startswith("prompt bootstrap")

    # Top Hessian eigenvalue on a handful of checkpoints around the transition (few Lanczos steps).
    batch = eval_batch(read_manifest(path).task, n=16)
    around = [s for s in steps if t.step - 6 * interval <= s <= t.step + 6 * interval][::2]
    sharpness = []
    for step in around:
        model = cache.get(str(path), step).model
        params = {n: p.detach() for n, p in model.named_parameters()}

        def loss_fn(p: dict[str, torch.Tensor], model=model) -> torch.Tensor:  # noqa: ANN001
            logits = torch.func.functional_call(model, p, (batch.tokens,))
            nll, _ = token_losses(logits, batch.tokens)
            m = batch.target_mask.to(nll.dtype)
            return (nll * m).sum() / m.sum()

        sharpness.append(float(lanczos_top(hessian_operator(loss_fn, params), 1, tol=1e-3).values[0]))
    peak_step = around[int(np.argmax(sharpness))]
    assert t.window_lo - interval <= peak_step <= t.window_hi + interval, (around, sharpness, t)


def test_induction_1l_has_no_transition(trained_induction_1l: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cache = _series(trained_induction_1l, monkeypatch)
    table, per_prompt, _ = _losses(path, cache)
    assert detect_transitions(table, per_prompt=per_prompt, n_boot=20) == []


def test_induction_2l_findings_carry_prompt_intervals_and_the_induction_chi_peaks_in_its_window(
    trained_induction_2l: Path, isolated_data_dir: Path
) -> None:
    found = _findings(trained_induction_2l, isolated_data_dir, "induction-2l")
    (loss,) = [t for t in found["transitions"] if t["quantity"] == "loss"]
    assert loss["uncertainty_method"].startswith("prompt bootstrap") and 400 <= loss["step"] <= 600
    assert loss["step_ci_lo"] <= loss["step"] <= loss["step_ci_hi"]
    assert loss["step_ci_hi"] - loss["step_ci_lo"] < 50  # the prompts place it within a checkpoint interval
    scores = [t for t in found["transitions"] if t["quantity"] == "induction_score" and t["layer"] == 1]
    assert scores and all(t["uncertainty_method"].startswith("prompt bootstrap") for t in scores)
    # The layer-1 head whose χ peaks highest: a significant peak inside its own transition window.
    chi = [p for p in found["susceptibility"] if p["quantity"] == "induction_score" and p["layer"] == 1]
    best = max(chi, key=lambda p: p["peak_value"])
    assert best["significant"] and best["in_window"] is True, best
    assert best["peak_ci_lo"] <= best["peak_step"] <= best["peak_ci_hi"]
    assert "χ of the induction score (layer 1 head" in found["summary"]
    # The exponents are reported either way; on checkpoints 50 steps apart none can be supported.
    loss_fits = [e for e in found["exponents"] if e["quantity"] == "loss"]
    assert {e["side"] for e in loss_fits} == {"before", "after"}
    assert all(not e["supported"] and e["reason"] for e in loss_fits)


def test_induction_1l_has_no_significant_chi_peak(
    trained_induction_1l: Path, isolated_data_dir: Path
) -> None:
    found = _findings(trained_induction_1l, isolated_data_dir, "induction-1l")
    chi = [p for p in found["susceptibility"] if p["quantity"] in ("loss", "induction_score")]
    assert {p["quantity"] for p in chi} == {"loss", "induction_score"}
    assert not any(p["significant"] for p in chi), chi
    assert not [t for t in found["transitions"] if t["quantity"] in ("loss", "induction_score")]
