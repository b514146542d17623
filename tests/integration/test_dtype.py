"""Loading in a chosen dtype (``AnalysisRequest.dtype``), with every measure still computed in float64.

A tiny random-init GPT-2 saved as a Hugging Face directory (with a word-level tokenizer built here), and
a tiny series in our own format, loaded in float32 and in bfloat16 on the CPU. The bfloat16 model's
scores are upcast to float64 as they are captured, so the identities of docs/measures.md hold on them
to 1e-10, and its results agree with the float32 load to bfloat16 precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
import torch
from rq.job import Job
from transformers import GPT2Config, GPT2LMHeadModel

from phasescope.analysis.run import build_batch, capture_attention, measure_checkpoint
from phasescope.config import Settings
from phasescope.measures.thermo import beta_grid, row_thermo
from phasescope.models.dtype import count_parameters, resolve_load_dtype
from phasescope.models.loading import LoadedModel, ModelCache, load_model, parse_model_spec
from phasescope.schemas import AnalysisRequest, InputSpec, MeasureParams
from tests.helpers import NULL_SERIES, SPECIAL, TEXTS, VOCAB, save_hf_model, tiny_series, word_tokenizer
from tests.integration.service import FAST, WorkerProcess, wait_for

# bfloat16 keeps 8 significant bits: machine epsilon 2^-7.
BF16_EPS = 2.0**-7
INPUTS = InputSpec(texts=TEXTS, n_prompts=8, seq_len=32)
PARAMS = MeasureParams(n_beta=21)
MEASURES = ["entropy", "spectra", "thermo"]
# Continuous quantities compared between the loads (counts and grid argmaxes may move by one step).
COMPARED = {
    "entropy": ["entropy", "entropy_mean", "entropy_norm"],
    "thermo": ["entropy", "internal_energy", "log_z", "heat_capacity", "free_energy"],
    "spectra": ["sigma", "stable_rank", "qk_sigma", "ov_sigma", "esd_eigenvalue"],
}


def _gpt2() -> torch.nn.Module:
    # Weights 10x the default init scale, so that attention is far from uniform and the scores are
    # O(1): the bfloat16 rounding then shows in every quantity.
    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, initializer_range=0.2, **SPECIAL
    )
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("dtype-models")
    save_hf_model(_gpt2, root / "gpt2")
    word_tokenizer(encoder=False).save_pretrained(root / "gpt2")
    tiny_series(root / "series", steps=(0, 10), **NULL_SERIES)
    return Settings(data_dir=root / "data", model_roots=[root])


@pytest.fixture(scope="module")
def loads(settings: Settings) -> dict[str, LoadedModel]:
    spec = str(settings.model_roots[0] / "gpt2")
    return {dtype: load_model(spec, settings=settings, dtype=dtype) for dtype in ("float32", "bfloat16")}


@pytest.fixture(scope="module")
def tables(loads: dict[str, LoadedModel]) -> dict[str, pd.DataFrame]:
    batch = build_batch(loads["float32"], INPUTS)
    return {d: measure_checkpoint(m, MEASURES, INPUTS, PARAMS, batch=batch) for d, m in loads.items()}


def _values(table: pd.DataFrame, measure: str, quantity: str) -> pd.Series:
    rows = table[(table["measure"] == measure) & (table["quantity"] == quantity)]
    keys = [
        c
        for c in ("layer", "head", "position", "beta", "index", "matrix")
        if c in rows and rows[c].notna().any()
    ]
    return rows.set_index(keys)["value"].sort_index()


def test_the_weights_load_in_the_requested_dtype(loads: dict[str, LoadedModel]) -> None:
    for dtype, loaded in loads.items():
        assert loaded.dtype == dtype
        assert {p.dtype for p in loaded.model.parameters()} == {getattr(torch, dtype)}
        assert loaded.model.cfg.dtype == getattr(torch, dtype)
    w32, w16 = loads["float32"].model.W_Q, loads["bfloat16"].model.W_Q
    # The same weights, rounded to bfloat16: equal to bfloat16 precision, not bit for bit.
    torch.testing.assert_close(w16, w32.to(torch.bfloat16), rtol=0, atol=0)
    assert not torch.equal(w16.float(), w32)


def test_bfloat16_scores_are_upcast_exactly_and_the_identities_hold_to_1e_10(
    loads: dict[str, LoadedModel],
) -> None:
    tokens = build_batch(loads["bfloat16"], INPUTS).tokens
    _, raw = capture_attention(loads["bfloat16"].model, tokens)
    _, scores = capture_attention(loads["bfloat16"].model, tokens, dtype=torch.float64)
    assert raw.dtype == torch.bfloat16 and scores.dtype == torch.float64
    finite = torch.isfinite(scores)
    # The float64 scores are the model's bfloat16 numbers, exactly (the upcast adds no rounding).
    assert torch.equal(scores[finite], raw[finite].double())
    assert torch.equal(torch.isneginf(scores), torch.isneginf(raw))

    betas = beta_grid(0.05, 20.0, 21)
    out = row_thermo(scores, betas)  # each [beta, layer, batch, head, query]
    assert all(v.dtype == torch.float64 for v in out.values())
    b = betas.reshape(-1, 1, 1, 1, 1)
    # S = β<E> + ln Z, and βF = -ln Z (docs/measures.md, identity 2), to 1e-10.
    expected = b * out["internal_energy"] + out["log_z"]
    scale = 1 + (b * out["internal_energy"]).abs() + out["log_z"].abs()
    assert ((out["entropy"] - expected).abs() / scale).max() < 1e-10
    assert torch.equal(out["beta_f"], -out["log_z"])
    # At β = 1 the entropy is that of softmax(scores).
    p = torch.softmax(scores, dim=-1)
    plogp = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
    one = int(torch.argmin((betas - 1).abs()))
    assert float(betas[one]) == 1.0
    torch.testing.assert_close(out["entropy"][one], -plogp.sum(-1), rtol=0, atol=1e-10)


def test_bfloat16_tables_are_float64_and_satisfy_the_identities(tables: dict[str, pd.DataFrame]) -> None:
    table = tables["bfloat16"]
    assert table["value"].dtype == np.float64
    assert set(table["measure"]) == set(MEASURES)
    s = _values(table, "thermo", "entropy")
    u = _values(table, "thermo", "internal_energy")
    log_z = _values(table, "thermo", "log_z")
    beta = s.index.get_level_values("beta").to_numpy()
    # Row averages of S = βU + ln Z: the identity holds for the means too.
    gap = np.abs(s.to_numpy() - (beta * u.to_numpy() + log_z.to_numpy()))
    assert gap.max() < 1e-10 * (1 + np.abs(log_z.to_numpy()).max())
    # The entropy measure and the thermodynamics at β = 1 average the same rows of the same scores.
    at_one = s[np.isclose(beta, 1.0, rtol=0, atol=1e-15)].droplevel("beta")
    mean = _values(table, "entropy", "entropy_mean")
    assert len(at_one) == len(mean) == 2 * 4
    np.testing.assert_allclose(at_one.to_numpy(), mean.to_numpy(), rtol=0, atol=1e-10)


def test_bfloat16_results_agree_with_float32_to_bfloat16_precision(tables: dict[str, pd.DataFrame]) -> None:
    differ = 0
    for measure, quantities in COMPARED.items():
        for quantity in quantities:
            a = _values(tables["float32"], measure, quantity)
            b = _values(tables["bfloat16"], measure, quantity)
            assert a.index.equals(b.index), (measure, quantity)
            a_np, b_np = a.to_numpy(), b.to_numpy()
            # Two bfloat16 epsilons relative to the value (plus one unit, for values near zero).
            bound = 2 * BF16_EPS * (1 + np.abs(a_np))
            assert (np.abs(a_np - b_np) <= bound).all(), (measure, quantity, np.abs(a_np - b_np).max())
            differ += int((a_np != b_np).any())
    # Every compared quantity moved: the bfloat16 weights were really used.
    assert differ == sum(len(q) for q in COMPARED.values())


def test_the_model_cache_keys_include_the_dtype(settings: Settings) -> None:
    spec = str(settings.model_roots[0] / "series")
    cache = ModelCache(device="cpu")
    f32 = cache.get(spec, 0, settings, dtype="float32")
    b16 = cache.get(spec, 0, settings, dtype="bfloat16")
    assert f32.model is not b16.model
    assert next(f32.model.parameters()).dtype == torch.float32 and b16.dtype == "bfloat16"
    assert next(b16.model.parameters()).dtype == torch.bfloat16
    assert cache.get(spec, 0, settings, dtype="float32") is f32
    # 'auto' on a CPU is float32: the same entry.
    assert cache.get(spec, 0, settings, dtype="auto") is f32
    # A sweep in bfloat16 swaps weights into the bfloat16 architecture.
    b16_next = cache.get(spec, 10, settings, dtype="bfloat16")
    assert b16_next.model is b16.model and b16_next.step == 10
    torch.testing.assert_close(
        b16_next.model.W_Q,
        load_model(spec, 10, settings=settings).model.W_Q.to(torch.bfloat16),
        rtol=0,
        atol=0,
    )


def test_auto_is_float32_on_a_cpu_and_half_precision_for_big_models_on_a_gpu(settings: Settings) -> None:
    asked: list[int] = []

    def count(n: int) -> object:
        return lambda: asked.append(n) or n

    assert resolve_load_dtype("auto", "cpu", count(10**10), settings) == "float32"
    assert asked == []  # a CPU load never counts parameters
    half = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert resolve_load_dtype("auto", "cuda:0", count(10**9), settings) == half
    assert resolve_load_dtype("auto", "cuda", count(10**9 - 1), settings) == "float32"
    assert resolve_load_dtype("auto", "cuda", lambda: None, settings) == "float32"
    assert resolve_load_dtype("bfloat16", "cpu", count(1), settings) == "bfloat16"
    assert resolve_load_dtype("float16", "cuda", count(1), settings) == "float16"
    assert asked == [10**9, 10**9 - 1]
    lowered = settings.model_copy(update={"auto_half_precision_params": 1000})
    assert resolve_load_dtype("auto", "cuda", count(5000), lowered) == half
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_load_dtype("float8", "cpu", count(1), settings)

    # Counted from the safetensors header alone: what transformers counts on the loaded model.
    ref = parse_model_spec(str(settings.model_roots[0] / "gpt2"), settings)
    torch.manual_seed(0)
    assert count_parameters(ref, 0, settings) == _gpt2().num_parameters()


def test_a_worker_loads_the_requested_dtype(
    tmp_path: Path, redis_server: object, isolated_data_dir: Path
) -> None:
    from backend.deps import JOB_FUNCTION
    from phasescope.config import get_settings
    from phasescope.service.queue import submit
    from phasescope.service.store import ResultStore

    steps = (0, 10)
    tiny_series(isolated_data_dir / "models" / "tiny", steps=steps, **NULL_SERIES)
    settings = get_settings()
    conn = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    env = {"PHASESCOPE_DATA_DIR": str(isolated_data_dir), "REDIS_URL": redis_server.url, **FAST}  # type: ignore[attr-defined]
    store = ResultStore(settings.store_dir)
    ids = {}
    for dtype in ("float32", "bfloat16"):
        request = AnalysisRequest(model="tiny", checkpoints=[10], measures=["entropy", "thermo"], dtype=dtype)
        aid, _ = submit(request, conn, store, settings, job_function=JOB_FUNCTION)
        assert Job.fetch(f"{aid}-10", connection=conn).kwargs["dtype"] == dtype
        ids[dtype] = aid
    assert ids["float32"] != ids["bfloat16"]
    worker = WorkerProcess(env, tmp_path / "logs", "dtype").start()
    try:
        wait_for(lambda: all(store.is_finished(a) for a in ids.values()), 240, "both analyses to finish")
    finally:
        worker.stop()
        conn.close()
    keys = ["measure", "quantity", "layer", "head", "position", "beta"]
    results = {}
    for dtype, aid in ids.items():
        table = store.results(aid)
        table = table[table["quantity"].isin(["entropy", "entropy_mean", "log_z", "internal_energy"])]
        results[dtype] = table.sort_values(keys)["value"].to_numpy(np.float64)
    a, b = results["float32"], results["bfloat16"]
    assert len(a) == len(b) > 100 and np.isfinite(a).all() and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # the worker loaded the second in bfloat16
    assert (np.abs(a - b) <= 2 * BF16_EPS * (1 + np.abs(a))).all()
