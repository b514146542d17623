"""Acceptance on the reference series: the induction transition is found where the loss drops, the
sharpness peaks inside it, and the one-layer control has none (docs/zoo.md, the reference
phenomenon). Trains zoo:induction-2l and zoo:induction-1l into a temporary directory (~20 s each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope.config import get_settings
from phasescope.measures.loss import token_losses
from phasescope.measures.sharpness import hessian_operator, lanczos_top
from phasescope.models.loading import ModelCache
from phasescope.models.series import read_manifest
from phasescope.phases.detect import detect_transitions
from phasescope.zoo import eval_batch, train_series

pytestmark = pytest.mark.slow


def _series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[Path, ModelCache]:
    monkeypatch.setenv("PHASESCOPE_MODEL_ROOTS", str(tmp_path))
    get_settings.cache_clear()
    path = train_series(name, seed=0, progress=False, out_dir=tmp_path / name)
    return path, ModelCache()


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, cache = _series(tmp_path, monkeypatch, "induction-2l")
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


def test_induction_1l_has_no_transition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cache = _series(tmp_path, monkeypatch, "induction-1l")
    table, per_prompt, _ = _losses(path, cache)
    assert detect_transitions(table, per_prompt=per_prompt, n_boot=20) == []
