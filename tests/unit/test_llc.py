"""Local learning coefficient through devinterp: d/2 on a regular model, the tidy table, settings, RNG hygiene."""

from __future__ import annotations

import json

import pytest
import torch

from phasescope.analysis.inputs import repeated_random_tokens
from phasescope.errors import MeasureError
from phasescope.measures.landscape import batch_loss, model_params
from phasescope.measures.llc import batch_item_loss, estimate_llc, llc_table
from phasescope.measures.tables import BASE_COLUMNS
from tests.helpers import tiny_model


def linear_regression(n: int = 256, d: int = 4, seed: int = 0):  # noqa: ANN201
    """A least-squares fit at its optimum; its loss ½(y − wᵀx)² is a Gaussian NLL, so λ = d/2."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(d, generator=gen, dtype=torch.float64) + torch.randn(
        n, generator=gen, dtype=torch.float64
    )
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y[:, None]).solution.T)

    def item_loss(m: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
        return 0.5 * (y[idx] - m(x[idx]).squeeze(-1)) ** 2

    return model, item_loss


def test_llc_of_a_regular_model_is_half_its_dimension() -> None:
    model, item_loss = linear_regression()
    weight = model.weight.detach().clone()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    # ε·nβ·h/4 ≈ 3%: the SGLD discretisation bias is well inside the chains' spread.
    res = estimate_llc(
        model, item_loss, 256, lr=5e-4, n_beta=256, localization=0.0, num_chains=4, num_draws=200
    )
    se = res.std / len(res.per_chain) ** 0.5
    assert abs(res.mean - 2.0) < 3 * se + 0.2, (res.mean, res.std)
    assert res.per_chain.shape == (4,) and res.loss_trace.shape == (4, 200)
    assert torch.equal(model.weight, weight)  # the chains ran on copies
    assert torch.equal(torch.rand(3), expected_next)  # devinterp's reseeding did not leak out
    assert res.settings["n_beta"] == 256 and res.settings["localization"] == 0.0


def test_a_diverging_chain_is_an_error_not_a_number() -> None:
    model, item_loss = linear_regression(n=32)
    with pytest.raises(MeasureError, match="lower lr"):
        estimate_llc(model, item_loss, 32, lr=50.0, n_beta=32, localization=0.0, num_chains=1, num_draws=30)


def test_table_and_settings_on_a_tiny_transformer() -> None:
    model = tiny_model(torch.float32, seed=3, n_layers=1)
    batch = repeated_random_tokens(8, 4, 12, seed=4)
    # The item loss averages to the plain loss of the batch.
    with torch.no_grad():
        item = batch_item_loss(batch)(model, torch.arange(8))
        plain = batch_loss(model, model_params(model), batch)
    assert float(item.mean()) == pytest.approx(float(plain), rel=1e-5)
    table = llc_table(model, batch, 75, num_chains=2, num_draws=5, batch_size=4)
    # The tidy shape every measure returns: the base columns, then its coordinates.
    assert list(table.columns) == [*BASE_COLUMNS, "index", "x", "se"]
    counts = table.groupby("quantity").size().to_dict()
    # The LLC's standard error is that of a mean over chains (docs/measures.md, "Uncertainties").
    by = table.set_index("quantity")
    assert by.loc["llc_mean", "se"] == pytest.approx(by.loc["llc_std", "value"] / 2**0.5, rel=1e-12)
    assert table[table["quantity"] != "llc_mean"]["se"].isna().all()
    assert counts == {"llc_mean": 1, "llc_std": 1, "llc_chain": 2, "llc_init_loss": 1, "sgld_loss": 10}
    assert (table["measure"] == "llc").all() and (table["checkpoint"] == 75).all()
    assert not table["value"].isna().any()
    # The sampler settings come back from estimate_llc (test above), JSON-able.
    res = estimate_llc(model, batch_item_loss(batch), 8, num_chains=2, num_draws=2, batch_size=4)
    json.dumps(res.settings)
    assert (
        res.settings["batch_size"] == 4
        and res.settings["num_chains"] == 2
        and res.settings["devinterp_version"]
    )
