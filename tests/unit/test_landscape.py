"""Loss-surface slices: filter normalisation, the centre is the plain loss, batched equals looped."""

from __future__ import annotations

import pytest
import torch

from phasescope.analysis.inputs import repeated_random_tokens
from phasescope.measures.landscape import (
    batch_loss,
    filter_axis,
    filter_norms,
    interpolation_slice,
    landscape_table,
    loss_slice,
    model_params,
    random_direction,
)
from phasescope.measures.loss import loss_table
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


@pytest.fixture(scope="module")
def batch():  # noqa: ANN201
    return repeated_random_tokens(4, 4, 12, seed=1)


def test_every_filter_has_the_norm_of_theta_and_biases_are_zero(model) -> None:  # noqa: ANN001
    theta = model_params(model)
    d = random_direction(theta, seed=3)
    assert set(d) == set(theta)
    for name, t in theta.items():
        if filter_axis(name, t) is None:
            assert torch.count_nonzero(d[name]) == 0, name
        else:
            torch.testing.assert_close(filter_norms(name, d[name]), filter_norms(name, t), rtol=1e-12, atol=0)
    # The layout the docstring promises: W_Q filters are columns (one per head and d_head index), W_O
    # filters rows (one per head and d_head index), W_E rows, W_U columns.
    assert filter_norms("blocks.0.attn.W_Q", theta["blocks.0.attn.W_Q"]).shape == (2, 1, 4)
    assert filter_norms("blocks.0.attn.W_O", theta["blocks.0.attn.W_O"]).shape == (2, 4, 1)
    assert filter_norms("embed.W_E", theta["embed.W_E"]).shape == (12, 1)
    assert filter_norms("unembed.W_U", theta["unembed.W_U"]).shape == (1, 12)
    assert filter_axis("blocks.0.attn.b_Q", theta["blocks.0.attn.b_Q"]) is None  # 2-d, but a bias


def test_same_seed_same_direction_and_another_seed_another(model) -> None:  # noqa: ANN001
    theta = model_params(model)
    a, b, c = random_direction(theta, 7), random_direction(theta, 7), random_direction(theta, 8)
    for name in theta:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert not torch.equal(a["embed.W_E"], c["embed.W_E"])


def test_grid_centre_is_the_plain_loss_and_the_model_is_untouched(model, batch) -> None:  # noqa: ANN001
    before = {k: v.clone() for k, v in model.state_dict().items()}
    coords, losses = loss_slice(model, batch, n_dims=2, n_points=5, radius=0.5, seed=0)
    assert losses.shape == (5, 5) and coords[2] == 0
    logits = model(batch.tokens)
    plain = loss_table(logits, batch.tokens, batch.target_mask, batch.splits, 0)
    expected = float(plain.loc[plain["quantity"] == "loss", "value"].iloc[0])
    assert float(losses[2, 2]) == pytest.approx(expected, rel=1e-12)
    assert float(batch_loss(model, model_params(model), batch)) == pytest.approx(expected, rel=1e-12)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # parameters and buffers (mask, IGNORE)
    # Away from the centre the loss moves: the slice really perturbs the weights.
    assert float((losses - losses[2, 2]).abs().max()) > 1e-3


def test_batched_slice_equals_plain_loop() -> None:
    m32 = tiny_model(torch.float32, seed=2)
    b = repeated_random_tokens(4, 4, 12, seed=5)
    _, looped = loss_slice(m32, b, n_dims=2, n_points=3, seed=4, batched=False)
    _, batched = loss_slice(m32, b, n_dims=2, n_points=3, seed=4, batched=True)
    _, chunked = loss_slice(m32, b, n_dims=2, n_points=3, seed=4, batched=True, chunk_size=4)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, looped, rtol=1e-5, atol=1e-5)


def test_interpolation_ends_are_the_two_checkpoints(model, batch) -> None:  # noqa: ANN001
    other_model = tiny_model(seed=9)
    other = model_params(other_model)
    alphas, line = interpolation_slice(model, other, batch, n_points=7, margin=0.25)
    assert alphas[1] == 0 and alphas[-2] == 1
    assert float(line[1]) == pytest.approx(float(batch_loss(model, model_params(model), batch)), rel=1e-12)
    assert float(line[-2]) == pytest.approx(float(batch_loss(other_model, other, batch)), rel=1e-10)


def test_table_has_grid_coordinates(model, batch) -> None:  # noqa: ANN001
    table = landscape_table(model, batch, 25, n_dims=2, n_points=3, other=model_params(tiny_model(seed=3)))
    surface = table[table["quantity"] == "loss_surface"]
    assert (
        len(surface) == 9 and set(surface["x"]) == {-1.0, 0.0, 1.0} and set(surface["y"]) == {-1.0, 0.0, 1.0}
    )
    line = table[table["quantity"] == "loss_interpolation"]
    assert len(line) == 21 and line["y"].isna().all()
    assert (table["measure"] == "landscape").all() and (table["checkpoint"] == 25).all()
    one_d = landscape_table(model, batch, 25, n_dims=1, n_points=3)
    assert "y" not in one_d and len(one_d) == 3


def test_bad_dimension_is_refused(model, batch) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="n_dims"):
        loss_slice(model, batch, n_dims=3)
