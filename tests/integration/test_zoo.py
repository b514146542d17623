"""The zoo trains real phase transitions: each series is trained once per module, into a temp dir.

The physics is checked against the reference figures of docs/zoo.md with scores computed here
from ``run_with_cache`` patterns, independently of ``phasescope.measures``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from phasescope.config import Settings
from phasescope.models.series import MANIFEST_NAME, SeriesManifest, checkpoint_filename, read_manifest
from phasescope.zoo import ZOO, eval_batch, is_trained, train_series, zoo_series_dir
from phasescope.zoo.grokking import answer_logits

pytestmark = pytest.mark.slow


def _train(root: Path, name: str) -> tuple[Path, SeriesManifest]:
    path = train_series(name, seed=0, progress=False, out_dir=root / name)
    return path, read_manifest(path)


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def induction_2l(zoo_root: Path) -> tuple[Path, SeriesManifest]:
    return _train(zoo_root, "induction-2l")


@pytest.fixture(scope="module")
def induction_1l(zoo_root: Path) -> tuple[Path, SeriesManifest]:
    return _train(zoo_root, "induction-1l")


@pytest.fixture(scope="module")
def grokking(zoo_root: Path) -> tuple[Path, SeriesManifest]:
    return _train(zoo_root, "grokking-p59")


def _load(path: Path, manifest: SeriesManifest, step: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        model = HookedTransformer(HookedTransformerConfig(**manifest.config))
    model.load_state_dict(load_file(str(path / checkpoint_filename(step))))
    return model.eval()


def _at_checkpoints(manifest: SeriesManifest, key: str) -> dict[int, float]:
    rows = {int(h["step"]): h for h in manifest.history}
    return {step: rows[step][key] for step in manifest.steps}


def _half_way_step(curve: dict[int, float]) -> float:
    """First step where the loss crosses half-way from its start to its end level (interpolated)."""
    steps = sorted(curve)
    start, end = curve[steps[0]], sum(curve[s] for s in steps[-5:]) / 5
    half = (start + end) / 2
    for a, b in zip(steps, steps[1:], strict=False):
        if curve[a] > half >= curve[b]:
            return a + (b - a) * (curve[a] - half) / (curve[a] - curve[b])
    raise AssertionError(f"loss never crosses {half:.2f}")


def _head_scores(model: Any, tokens: torch.Tensor, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[layer, head]`` induction and previous-token scores from the attention patterns."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    induction, previous = [], []
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, query, key]
        query = torch.arange(period, 2 * period)  # the second copy
        induction.append(pattern[:, :, query, query - period + 1].mean((0, 2)))
        query = torch.arange(1, 2 * period)
        previous.append(pattern[:, :, query, query - 1].mean((0, 2)))
    return torch.stack(induction), torch.stack(previous)


def test_registry_and_dirs(tmp_path: Path) -> None:
    assert sorted(ZOO) == ["grokking-p59", "induction-1l", "induction-2l"]
    assert ZOO["induction-2l"].checkpoint_steps == tuple(range(0, 1001, 25))
    assert [ZOO[n].n_layers for n in ("induction-2l", "induction-1l", "grokking-p59")] == [2, 1, 1]
    settings = Settings(data_dir=tmp_path)
    assert zoo_series_dir("zoo:induction-2l", settings) == tmp_path / "zoo" / "induction-2l"
    assert not is_trained("induction-2l", settings)


def test_zoo_modules_declare_sorted_all() -> None:
    for module in ("__init__", "grokking", "induction", "registry", "spec", "tasks", "training"):
        mod = importlib.import_module(
            "phasescope.zoo" if module == "__init__" else f"phasescope.zoo.{module}"
        )
        assert list(mod.__all__) == sorted(mod.__all__), module
        assert all(hasattr(mod, name) for name in mod.__all__), module


def test_induction_2l_forms_induction_heads(induction_2l: tuple[Path, SeriesManifest]) -> None:
    path, manifest = induction_2l
    curve = _at_checkpoints(manifest, "eval_loss")
    assert all(curve[s] > 3.5 for s in curve if s <= 200), "no loss plateau near ln 64 early on"
    assert 350 <= _half_way_step(curve) <= 650
    assert curve[1000] < 1.2
    model = _load(path, manifest, 1000)
    batch = eval_batch(manifest.task)
    induction, previous = _head_scores(model, batch.tokens, batch.period or 0)
    assert induction[1].max() > 0.6, induction
    assert previous[0].max() > 0.3, previous  # layer-0 previous-token heads feed the induction heads
    first = _head_scores(_load(path, manifest, 0), batch.tokens, batch.period or 0)[0]
    assert first[1].max() < 0.2


def test_induction_1l_stays_on_the_plateau(induction_1l: tuple[Path, SeriesManifest]) -> None:
    _, manifest = induction_1l
    curve = _at_checkpoints(manifest, "eval_loss")
    assert len(curve) == 41
    assert min(curve.values()) > 2.5


def test_grokking_generalises_after_memorising(grokking: tuple[Path, SeriesManifest]) -> None:
    _, manifest = grokking
    history = manifest.history
    assert [int(h["step"]) for h in history] == list(range(manifest.training["steps"] + 1))
    memorised = next(int(h["step"]) for h in history if h["train_acc"] == 1.0)
    grokked = next(int(h["step"]) for h in history if h["test_acc"] >= 0.9)
    assert memorised <= 300
    assert history[memorised]["test_acc"] < 0.5
    assert grokked > memorised
    assert history[-1]["test_acc"] >= 0.9
    # The checkpoints resolve the jump: several lie between memorisation and generalisation.
    assert sum(memorised < s < grokked for s in manifest.steps) >= 5


def test_eval_batch_reproduces_the_recorded_losses(
    induction_2l: tuple[Path, SeriesManifest], grokking: tuple[Path, SeriesManifest]
) -> None:
    # The Batch convention: target_mask[b, t] selects the prediction of tokens[b, t] made at t - 1.
    def losses(model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logp = model(batch.tokens)[:, :-1].log_softmax(-1)
        target = batch.tokens[:, 1:]
        mask = batch.target_mask[:, 1:]
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return nll[mask], (logp.argmax(-1) == target)[mask]

    path, manifest = induction_2l
    batch = eval_batch(manifest.task)
    assert batch.tokens.shape == (256, 32) and batch.period == 16
    assert batch.target_mask.sum() == 256 * 15
    assert torch.equal(eval_batch(manifest.task, n=8).tokens, batch.tokens[:8])
    nll, _ = losses(_load(path, manifest, 1000), batch)
    assert nll.mean().item() == pytest.approx(manifest.history[-1]["eval_loss"], abs=1e-4)

    path, manifest = grokking
    p = manifest.task["p"]
    batch = eval_batch(manifest.task)
    assert batch.tokens.shape == (p * p, 4) and batch.period is None
    assert torch.equal(batch.splits["test"], ~batch.splits["train"])
    assert batch.splits["train"].sum() == round(0.4 * p * p)
    assert batch.target_mask[:, 3].all() and batch.target_mask.sum() == p * p
    step = manifest.steps[-1]
    model = _load(path, manifest, step)
    _, correct = losses(model, batch)
    test_acc = correct[batch.splits["test"]].double().mean().item()
    assert test_acc == pytest.approx(manifest.history[step]["test_acc"], abs=2 / (p * p))
    # Training's fast forward is the model's own: same logits at the "=" position.
    with torch.no_grad():
        full = model(batch.tokens[:, :3])[:, -1]
        torch.testing.assert_close(answer_logits(model, batch.tokens[:, :3]), full, rtol=1e-4, atol=1e-4)


def test_manifest_lists_exactly_the_files(
    induction_2l: tuple[Path, SeriesManifest],
    induction_1l: tuple[Path, SeriesManifest],
    grokking: tuple[Path, SeriesManifest],
) -> None:
    for path, manifest in (induction_2l, induction_1l, grokking):
        spec = ZOO[manifest.name]
        assert list(manifest.steps) == list(spec.checkpoint_steps)
        expected = {MANIFEST_NAME} | {checkpoint_filename(s) for s in manifest.steps}
        assert set(os.listdir(path)) == expected
        assert {int(h["step"]) for h in manifest.history} >= set(manifest.steps)
        assert manifest.task == spec.task_for_seed(0) and manifest.seed == 0
        assert manifest.training["wall_seconds"] > 0
        assert is_trained(manifest.name, out_dir=path)
    # Nothing but finished series in the zoo root: no staging directories left behind.
    assert sorted(os.listdir(path.parent)) == sorted(ZOO)


def test_a_complete_series_is_not_retrained(induction_1l: tuple[Path, SeriesManifest]) -> None:
    path, _ = induction_1l
    before = (path / MANIFEST_NAME).stat().st_mtime_ns
    assert train_series("zoo:induction-1l", progress=False, out_dir=path) == path
    assert (path / MANIFEST_NAME).stat().st_mtime_ns == before


def test_same_seed_same_weights(tmp_path: Path) -> None:
    for name, steps in (("induction-2l", 30), ("grokking-p59", 5)):
        spec = ZOO[name]
        runs = [
            spec.train(tmp_path / f"{name}-{i}-{seed}", seed=seed, progress=False, max_steps=steps)
            for i, seed in ((0, 0), (1, 0), (2, 1))
        ]
        assert runs[0].steps[-1] == steps and runs[0].history == runs[1].history
        weights = [
            load_file(str(tmp_path / f"{name}-{i}-{seed}" / checkpoint_filename(steps)))
            for i, seed in ((0, 0), (1, 0), (2, 1))
        ]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
        assert not torch.equal(weights[0]["embed.W_E"], weights[2]["embed.W_E"])


def test_partial_series_is_not_trained(tmp_path: Path, induction_1l: tuple[Path, SeriesManifest]) -> None:
    source, manifest = induction_1l
    # Checkpoints without a manifest: a run that died before its end.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / checkpoint_filename(0)).write_bytes((source / checkpoint_filename(0)).read_bytes())
    assert not is_trained("induction-1l", out_dir=bare)
    # A manifest listing a file that is missing.
    holed = tmp_path / "holed"
    holed.mkdir()
    for f in source.iterdir():
        (holed / f.name).write_bytes(f.read_bytes())
    (holed / checkpoint_filename(500)).unlink()
    assert not is_trained("induction-1l", out_dir=holed)
    # A finished but shortened run is not the series.
    short = tmp_path / "short"
    ZOO["induction-1l"].train(short, progress=False, max_steps=25)
    assert not is_trained("induction-1l", out_dir=short)


def test_interrupted_training_leaves_nothing_that_looks_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phasescope.zoo.training as training

    real_write = training.write_series_checkpoint
    calls = []

    def write_then_interrupt(series_dir: Path, step: int, state: dict[str, torch.Tensor]) -> Path:
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a user's Ctrl-C mid-run
        calls.append(step)
        return real_write(series_dir, step, state)

    monkeypatch.setattr(training, "write_series_checkpoint", write_then_interrupt)
    target = tmp_path / "zoo" / "induction-1l"
    with pytest.raises(KeyboardInterrupt):
        train_series("induction-1l", progress=False, out_dir=target)
    assert calls == [0, 25, 50]
    assert not target.exists() and not is_trained("induction-1l", out_dir=target)
    assert list((tmp_path / "zoo").iterdir()) == []  # the staging directory is cleaned up too


def test_grokking_findings_name_memorisation_then_generalisation(
    grokking: tuple[Path, SeriesManifest], zoo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole chain on the real series: loss measure on every checkpoint, then the findings."""
    from phasescope.analysis.run import run_local
    from phasescope.config import get_settings
    from phasescope.phases.findings import find_transitions
    from phasescope.schemas import InputSpec

    path, manifest = grokking
    monkeypatch.setenv("PHASESCOPE_MODEL_ROOTS", str(zoo_root))
    get_settings.cache_clear()
    table, _ = run_local(str(path), list(manifest.steps), ["loss"], InputSpec())
    findings = find_transitions(table, n_boot=10)
    text = findings["summary"]
    memorised = next(int(h["step"]) for h in manifest.history if h["train_acc"] == 1.0)
    grokked = next(int(h["step"]) for h in manifest.history if h["test_acc"] >= 0.9)
    assert text.index("memorisation") < text.index("generalisation (grokking) transition"), text
    by_quantity = {t["quantity"]: t for t in findings["transitions"]}
    assert by_quantity["loss_train"]["step"] <= memorised
    assert memorised < by_quantity["accuracy_test"]["step"] <= grokked * 1.2
    assert by_quantity["accuracy_test"]["after"] <= 1.0 and by_quantity["loss_test"]["after"] >= 0.0
