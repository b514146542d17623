"""The compute functions of the soft-mode measures (``hessian_density``, ``head_llc``).

Their registry entries are in ``phasescope.measures.builtin_softmodes``; both are of the ``landscape``
kind, so ``data.batch`` holds the first ``heavy_prompts`` prompts (``phasescope.analysis.run``).
"""

from __future__ import annotations

import pandas as pd

from phasescope.analysis.adapters import MeasureInput

__all__ = ["head_llc", "hessian_density"]


def hessian_density(data: MeasureInput) -> pd.DataFrame:
    """The Hessian's spectral density by stochastic Lanczos quadrature (``phasescope.measures.slq``), its
    Lanczos basis bounded by ``Settings.max_slq_basis_mib``."""
    from phasescope.config import get_settings
    from phasescope.measures.slq import hessian_density_table

    data.require_lm_head("loss landscape")
    p = data.params
    return hessian_density_table(
        data.loaded.model,
        data.batch,
        data.step,
        steps=p.slq_steps,
        probes=p.slq_probes,
        seed=p.landscape_seed,
        max_basis_bytes=get_settings().max_slq_basis_mib * 2**20,
    )


def head_llc(data: MeasureInput) -> pd.DataFrame:
    """The LLC restricted to each head (``phasescope.measures.head_llc``): head_llc's own chains and draws,
    the llc measure's step size and localisation."""
    from phasescope.measures.head_llc import head_llc_table

    data.require_lm_head("loss landscape")
    p = data.params
    return head_llc_table(
        data.loaded.model,
        data.batch,
        data.step,
        max_heads=p.head_llc_max_heads,
        lr=p.llc_lr,
        localization=p.llc_localization,
        num_chains=p.head_llc_chains,
        num_draws=p.head_llc_draws,
        seed=p.landscape_seed,
    )
