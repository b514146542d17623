"""Per-head LLC: a head frozen at zero has a restricted LLC near zero, a head that does the task a clearly
positive one (the argument is in docs/measures.md, "Per-head local learning coefficient")."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from phasescope.analysis.inputs import Batch, repeated_random_tokens
from phasescope.errors import MeasureError
from phasescope.measures.head_llc import head_llc_table, head_masks, restricted_llc
from phasescope.measures.landscape import batch_loss
from phasescope.measures.llc import batch_item_loss

# One attention-only layer of two heads learns to copy a period-4 block (a previous-block head); 30%
# of the copies are replaced by random tokens, so the loss keeps curvature where it settles. Head 1 is
# set to zero and kept there (its gradient masked) while everything else trains.
RECIPE = dict(
    config=dict(n_layers=1, d_model=16, n_heads=2, d_head=4, n_ctx=8, d_vocab=12, attn_only=True, seed=0),
    prompts=64,
    noise=0.3,
    data_seed=1,
    noise_seed=5,
    adam_lr=1e-2,
    steps=300,
    dead_head=1,
)
DEAD, LIVE = RECIPE["dead_head"], 0
SAMPLER = dict(num_chains=2, num_draws=60, lr=1e-4, localization=100.0)


def noisy_copy_batch() -> Batch:
    clean = repeated_random_tokens(
        RECIPE["prompts"], 4, RECIPE["config"]["d_vocab"], seed=RECIPE["data_seed"]
    )
    gen = torch.Generator().manual_seed(RECIPE["noise_seed"])
    tokens = clean.tokens.clone()
    flip = torch.rand(tokens.shape, generator=gen) < RECIPE["noise"]
    flip[:, :4] = False  # the first copy is the context; only the predicted copy is corrupted
    tokens[flip] = torch.randint(0, RECIPE["config"]["d_vocab"], tokens.shape, generator=gen)[flip]
    return Batch(tokens, clean.target_mask, description="noisy period-4 copies")


def new_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(**RECIPE["config"], normalization_type=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens's own deprecations
        return HookedTransformer(cfg)


def train(model: HookedTransformer, batch: Batch) -> None:
    masks = head_masks(model, 0, DEAD)
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_parameter(name)[mask] = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["adam_lr"])
    for _ in range(RECIPE["steps"]):
        loss = batch_loss(model, dict(model.named_parameters()), batch)
        opt.zero_grad()
        loss.backward()
        for name, mask in masks.items():
            model.get_parameter(name).grad[mask] = 0.0  # Adam's step of a zero gradient is zero
        opt.step()


@pytest.fixture(scope="module")
def dead_head_model() -> tuple[HookedTransformer, Batch]:
    """The trained model, trained once and cached by its recipe (as ``trained_induction_2l``)."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(repr(sorted(RECIPE.items())).encode()).hexdigest()[:12]
    root = Path(os.environ.get("PHASESCOPE_TEST_CACHE", Path.home() / ".cache" / "phasescope-tests"))
    path = root / f"head-llc-dead-head-{key}.safetensors"
    model, batch = new_model(), noisy_copy_batch()
    if path.exists():
        weights = load_file(path)
        assert set(weights) == {n for n, _ in model.named_parameters()}
        model.load_state_dict(weights, strict=False)
    else:
        train(model, batch)
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, str(tmp))
        tmp.replace(path)
    return model.eval(), batch


def test_head_masks_select_exactly_the_heads_slices() -> None:
    model = new_model()
    masks = head_masks(model, 0, 1)
    names = {n.rsplit(".", 1)[-1] for n in masks}
    assert names == {"W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"}  # b_O is the layer's, not the head's
    for name, mask in masks.items():
        assert mask is not None and mask.shape == model.get_parameter(name).shape
        assert mask[1].all() and not mask[0].any()  # TransformerLens keeps heads on axis 0
    d_model, d_head = 16, 4
    assert sum(int(m.sum()) for m in masks.values()) == 4 * d_model * d_head + 3 * d_head


def test_a_head_frozen_at_zero_has_llc_near_zero_and_a_live_head_a_positive_one(dead_head_model) -> None:  # noqa: ANN001
    model, batch = dead_head_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dead = head_masks(model, 0, DEAD)
    assert all(not model.get_parameter(n)[m].any() for n, m in dead.items())  # still exactly zero
    item_loss, n = batch_item_loss(batch), batch.tokens.shape[0]

    # With W_V, b_V and W_O of the head zero its output is zero whatever W_Q, W_K: restricted to those
    # the loss is constant, so every draw's loss is the checkpoint's and λ̂ = 0 to rounding.
    qk = {k: m for k, m in dead.items() if k.rsplit(".", 1)[-1] in ("W_Q", "W_K", "b_Q", "b_K")}
    flat = restricted_llc(model, item_loss, n, qk, **SAMPLER)
    assert flat.settings["sampled_weights"] == 2 * 16 * 4 + 2 * 4
    assert np.abs(flat.per_chain).max() < 1e-5, flat.per_chain

    # The whole head: its weights enter as the product (W_V + δV)(W_O + δO), second order, a saddle
    # whose mean over the localised chains is ~0; the live head's loss rises in every direction.
    off = restricted_llc(model, item_loss, n, dead, **SAMPLER)
    on = restricted_llc(model, item_loss, n, head_masks(model, 0, LIVE), **SAMPLER)
    se_on = on.std / np.sqrt(len(on.per_chain))
    se_off = off.std / np.sqrt(len(off.per_chain))
    assert on.mean > 1.0 and on.mean > 5 * se_on, (on.mean, on.per_chain)
    assert abs(off.mean) < 0.01 * on.mean and abs(off.mean) < 3 * se_off + 0.01, (off.mean, off.per_chain)
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())  # chains ran on copies


def test_table_has_one_row_per_head_with_its_chain_error(dead_head_model) -> None:  # noqa: ANN001
    model, batch = dead_head_model
    table = head_llc_table(model, batch, 300, max_heads=2, **{**SAMPLER, "num_draws": 30})
    assert (table["measure"] == "head_llc").all() and (table["quantity"] == "head_llc").all()
    assert table[["layer", "head"]].astype(int).values.tolist() == [[0, 0], [0, 1]]
    assert (table["checkpoint"] == 300).all() and (table["se"] >= 0).all()
    value = table.set_index("head")["value"]
    assert value[LIVE] > 10 * abs(value[DEAD])
    with pytest.raises(MeasureError, match="head_llc_max_heads"):
        head_llc_table(model, batch, 300, max_heads=1, **SAMPLER)
    one = head_llc_table(model, batch, 300, max_heads=2, **{**SAMPLER, "num_chains": 1, "num_draws": 10})
    assert one["se"].isna().all()  # one chain has no spread


def test_the_request_sets_head_llcs_own_sampler(dead_head_model) -> None:  # noqa: ANN001
    from phasescope.analysis.run import measure_landscape
    from phasescope.models.loading import LoadedModel, ModelRef
    from phasescope.schemas import MeasureParams

    model, batch = dead_head_model
    loaded = LoadedModel(ModelRef("dead-head", "series", "dead-head"), 300, model)
    # head_llc_chains and head_llc_draws reach the sampler (the llc measure's chains and draws do not):
    # the table is the one head_llc_table makes with those settings, to the last bit.
    params = MeasureParams(head_llc_chains=2, head_llc_draws=10, head_llc_max_heads=2, llc_chains=1)
    table = measure_landscape(loaded, ["head_llc"], params, batch)
    direct = head_llc_table(
        model, batch, 300, max_heads=2, num_chains=2, num_draws=10, lr=1e-4, localization=100.0, seed=0
    )
    np.testing.assert_array_equal(table["value"].to_numpy(), direct["value"].to_numpy())
    np.testing.assert_array_equal(table["se"].to_numpy(), direct["se"].to_numpy())
    assert table["se"].notna().all()  # two chains: a spread, whatever llc_chains says
    one = measure_landscape(loaded, ["head_llc"], params.model_copy(update={"head_llc_chains": 1}), batch)
    assert one["se"].isna().all()


def test_the_defaults_are_head_llcs_own_and_its_reuse_key_names_them() -> None:
    from phasescope.schemas import AnalysisRequest, MeasureParams
    from phasescope.service.reuse import measure_keys

    default = MeasureParams()
    assert (default.head_llc_chains, default.head_llc_draws) == (2, 50)
    assert default.head_llc_chains * default.head_llc_draws < default.llc_chains * default.llc_draws

    def key(**params: object) -> str:
        request = AnalysisRequest(model="tiny", measures=["head_llc", "llc"], params=params)
        return measure_keys(request.model_dump(mode="json"), 10, "files:x")["head_llc"]

    assert key(head_llc_draws=60) != key() != key(head_llc_chains=3)
    assert key(llc_draws=200, llc_chains=8) == key()  # the llc measure's sampler size is not head_llc's
    assert key(llc_lr=1e-3) != key()  # its step size and localisation are shared


def test_a_model_declaring_more_heads_than_head_llc_max_heads_is_refused_at_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phasescope.config import get_settings
    from phasescope.errors import InvalidRequest
    from phasescope.schemas import AnalysisRequest
    from phasescope.service.shape_limits import check_shape_limits
    from tests.helpers import tiny_series

    monkeypatch.setenv("PHASESCOPE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        tiny_series(tmp_path / "models" / "wide", steps=(0, 10), n_heads=8, d_head=4)  # 2 layers × 8
        wide = {"model": "wide", "measures": ["head_llc", "loss"]}
        with pytest.raises(InvalidRequest) as caught:
            check_shape_limits(AnalysisRequest.model_validate(wide))
        assert caught.value.field == "params.head_llc_max_heads"
        assert "16 heads" in caught.value.message and "head_llc_max_heads = 8" in caught.value.message
        check_shape_limits(AnalysisRequest.model_validate({**wide, "params": {"head_llc_max_heads": 16}}))
        check_shape_limits(AnalysisRequest.model_validate({**wide, "measures": ["loss"]}))
        # A model that declares no shape here (TransformerLens: its config is converted at load time)
        # is left to the worker, which refuses it with the same field (head_llc_table above).
        check_shape_limits(
            AnalysisRequest(model="tl:gpt2", measures=["head_llc"], params={"head_llc_max_heads": 1})
        )
    finally:
        get_settings.cache_clear()
