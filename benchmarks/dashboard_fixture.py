"""A finished analysis of a Pythia-160m-sized sweep, written through the results store (no model).

The dashboard benchmark (``benchmarks.dashboard``) needs a results table of the size a real sweep
gives: 154 checkpoints × 12 layers × 12 heads, the default measures (entropy, thermo, spectra, heads,
loss), 61 β — about 167 000 rows per checkpoint, 26 M in all. Measuring a real model would take hours
on a CPU, and the dashboard's speed depends on the table's shape, not on its values, so the values
here are synthetic but plausible: an induction transition (loss falls, the induction scores of a few
heads rise around step 2000 on a log-step sigmoid), entropies that fall with it, thermodynamic sweeps
of the right form, Marchenko–Pastur-like weight spectra with α near 3. Everything is written the way
workers write it (``ResultStore.write_part`` with a job record per checkpoint) and finished the way
the service finishes an analysis (``phasescope.service.queue.finalize``: merged table, digest,
findings), so the API serves it as any finished analysis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Shape", "SHAPES", "pythia_steps", "write_fixture"]

DEFAULT_MEASURES = ["entropy", "thermo", "spectra", "heads", "loss"]


@dataclass(frozen=True)
class Shape:
    """The model and sweep the fixture imitates."""

    n_checkpoints: int
    n_layers: int
    n_heads: int
    seq_len: int  # query positions per prompt (entropy profile, attention singular values)
    d_head: int  # W_QK / W_OV singular values per head
    d_model: int  # weight-ESD eigenvalues per matrix
    n_beta: int = 61


SHAPES = {
    "toy": Shape(8, 2, 2, 8, 4, 16),
    "quick": Shape(41, 6, 8, 32, 32, 256),
    "full": Shape(154, 12, 12, 64, 64, 768),  # Pythia-160m: 154 checkpoints, d_model 768, 64-token prompts
}


def pythia_steps(n: int) -> list[int]:
    """Pythia's checkpoint steps (0, 1, 2, 4, …, 512, then every 1000 to 143000) for n = 154; fewer
    (a log-spaced subset that keeps both ends) for a smaller n."""
    steps = [0] + [2**k for k in range(10)] + list(range(1000, 143001, 1000))
    if n >= len(steps):
        return steps
    picks = np.unique(np.round(np.geomspace(1, len(steps), n)).astype(int) - 1)
    return sorted({steps[0], *[steps[i] for i in picks], steps[-1]})[:n]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _tidy(
    measure: str, quantity: str, values: np.ndarray, dims: tuple[str, ...], step: int, **kw
) -> pd.DataFrame:
    from phasescope.measures.tables import tidy

    return tidy(measure, quantity, values, dims, checkpoint=step, **kw)


def _checkpoint_table(shape: Shape, step: int, progress: float, rng: np.random.Generator) -> pd.DataFrame:
    """One checkpoint's tidy table; ``progress`` in [0, 1] is how far through the transition it is."""
    L, H, T = shape.n_layers, shape.n_heads, shape.seq_len
    frames: list[pd.DataFrame] = []
    noise = lambda *s: rng.normal(0.0, 0.01, s)  # noqa: E731 - small per-value jitter
    # Heads: a few induction heads (layers ≥ 1) switch on with the transition.
    induction = np.full((L, H), 0.04) + noise(L, H)
    chosen = [(layer, (3 * layer + 1) % H) for layer in range(1, L)]
    for layer, head in chosen:
        induction[layer, head] += 0.7 * progress
    prev = np.full((L, H), 0.1) + noise(L, H)
    prev[0, 0] += 0.5 * progress
    frames += [
        _tidy("heads", "induction_score", induction, ("layer", "head"), step),
        _tidy("heads", "prev_token_score", prev, ("layer", "head"), step),
    ]
    # Loss: 10.8 nats at init, a plateau, the induction drop, then slow improvement.
    loss = 10.8 - 6.0 * min(1.0, np.log1p(step) / 7.0) - 1.0 * progress - 0.2 * np.log1p(step) / 12
    for quantity, value in (("loss", loss), ("loss_se", 0.05), ("accuracy", 0.05 + 0.3 * progress)):
        frames.append(_tidy("loss", quantity, np.asarray(value), (), step))
    # Entropy per head and position: near ln(position + 1) at init, lower once heads specialise.
    pos = np.arange(T)
    sharp = 0.2 + 0.6 * progress * (induction / induction.max())[..., None]
    ent = np.log1p(pos)[None, None, :] * (1 - sharp) + np.abs(noise(L, H, T))
    norm = ent / np.log(np.maximum(pos + 1, 2))[None, None, :]
    k90 = np.maximum(1.0, 0.9 * (pos + 1)[None, None, :] * (1 - sharp))
    for quantity, values in (("entropy", ent), ("entropy_norm", norm), ("k90", k90)):
        frames.append(_tidy("entropy", quantity, values, ("layer", "head", "position"), step))
    for quantity, values in (
        ("entropy_mean", ent.mean(-1)),
        ("entropy_norm_mean", norm.mean(-1)),
        ("k90_mean", k90.mean(-1)),
        ("k90_frac_mean", (k90 / (pos + 1)).mean(-1)),
        ("hopfield_regime", np.where(sharp.mean(-1) > 0.5, 1.0, 2.0)),
    ):
        frames.append(_tidy("entropy", quantity, values, ("layer", "head"), step))
    # Thermodynamics: a sweep per head whose heat-capacity peak β* moves with the transition.
    beta = np.geomspace(0.05, 20.0, shape.n_beta)
    star = 2.0 + 4.0 * sharp.mean(-1) + noise(L, H)  # (L, H)
    x = np.log(beta)[None, None, :] - np.log(star)[..., None]
    c = 1.1 * np.exp(-0.5 * (x / 0.8) ** 2)
    s = 3.0 * (1 - _sigmoid(2.0 * x))
    u = -s / np.maximum(beta[None, None, :], 1e-9) * 0.3
    log_z = s + beta[None, None, :] * u * -1.0 + 1.0
    sweep = {
        "entropy": s,
        "heat_capacity": c,
        "internal_energy": u,
        "free_energy": -log_z / beta[None, None, :],
        "log_z": log_z,
        "beta_f": -log_z,
    }
    for quantity, values in sweep.items():
        frames.append(
            _tidy("thermo", quantity, values, ("layer", "head", "beta"), step, coords={"beta": beta})
        )
    for quantity, values in (
        ("beta_star", star),
        ("beta_star_censored", np.zeros((L, H))),
        ("beta_star_bound", np.full((L, H), np.nan)),
        ("heat_capacity_max", c.max(-1)),
    ):
        frames.append(_tidy("thermo", quantity, values, ("layer", "head"), step))
    # Spectra: attention singular values per head (index k), factored W_QK and W_OV, and weight ESDs.
    k = np.arange(T)
    sigma = np.exp(-k[None, None, :] * (0.05 + 0.3 * sharp.mean(-1, keepdims=True))) * 1.6
    frames.append(_tidy("spectra", "sigma", sigma, ("layer", "head", "index"), step))
    kd = np.arange(shape.d_head)
    for quantity in ("qk_sigma", "ov_sigma"):
        values = np.exp(-kd / (0.3 * shape.d_head))[None, None, :] * (1 + np.abs(noise(L, H, 1)) * 10)
        frames.append(_tidy("spectra", quantity, values, ("layer", "head", "index"), step))
    for quantity, values in (
        ("sigma_max", sigma[..., 0]),
        ("stable_rank", (sigma**2).sum(-1) / sigma[..., 0] ** 2),
        (
            "effective_rank",
            np.exp(
                -(sigma / sigma.sum(-1, keepdims=True) * np.log(sigma / sigma.sum(-1, keepdims=True))).sum(-1)
            ),
        ),
        ("gap", sigma[..., 0] - sigma[..., 1]),
    ):
        frames.append(_tidy("spectra", quantity, values, ("layer", "head"), step))
    per_layer = ["W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"]
    n = shape.d_model
    # MP-like bulk (a squared Gaussian sample, sorted) plus a heavy tail that grows with training.
    eig = np.sort(rng.gamma(2.0, 0.02, (L, len(per_layer), n)), axis=-1)[..., ::-1].copy()
    eig[..., : max(1, n // 50)] *= 1 + 5 * (0.2 + progress)
    index = np.arange(n)
    frames.append(
        _tidy(
            "spectra",
            "esd_eigenvalue",
            eig,
            ("layer", "matrix", "index"),
            step,
            coords={"matrix": np.array(per_layer, dtype=object), "index": index},
        )
    )
    alpha = 3.5 - 1.0 * progress + noise(L, len(per_layer)) * 10
    for quantity, values in (
        ("esd_alpha", alpha),
        ("esd_alpha_se", np.full(alpha.shape, 0.15)),
        ("esd_xmin", eig[..., n // 10]),
        ("esd_n_tail", np.full(alpha.shape, float(n // 10))),
        ("mp_lambda_minus", eig[..., -1]),
        ("mp_lambda_plus", eig[..., n // 20]),
        ("spike_count", np.zeros(alpha.shape)),
    ):
        frames.append(
            _tidy(
                "spectra",
                quantity,
                values,
                ("layer", "matrix"),
                step,
                coords={"matrix": np.array(per_layer, dtype=object)},
            )
        )
    for matrix in ("W_E", "W_U"):  # whole-model matrices (no layer)
        ev = np.sort(rng.gamma(2.0, 0.02, n))[::-1].copy()
        frames.append(_tidy("spectra", "esd_eigenvalue", ev, ("index",), step, fixed={"matrix": matrix}))
        for quantity, value in (("esd_alpha", 3.0), ("esd_alpha_se", 0.2), ("mp_lambda_plus", ev[n // 20])):
            frames.append(_tidy("spectra", quantity, np.asarray(value), (), step, fixed={"matrix": matrix}))
    from phasescope.measures.tables import concat_tables

    return concat_tables(frames)


def write_fixture(store_dir: Path, shape: Shape, transition_step: int = 2000, seed: int = 0) -> str:
    """Write the finished analysis into the results store at ``store_dir``; returns its id.

    The request is the default analysis of ``tl:pythia-160m`` over ``shape.n_checkpoints`` of Pythia's
    steps. Its id is derived from the shape (the store needs 24 hex digits; nothing resolves it).
    """
    import hashlib

    from phasescope.schemas import AnalysisRequest
    from phasescope.service.queue import finalize
    from phasescope.service.store import ResultStore

    steps = pythia_steps(shape.n_checkpoints)
    request = AnalysisRequest(model="tl:pythia-160m", measures=DEFAULT_MEASURES)
    aid = hashlib.sha256(f"dashboard-fixture {shape} {seed}".encode()).hexdigest()[:24]
    store = ResultStore(store_dir)
    now = time.time()
    store.save_request(aid, request, {"steps": steps, "weights": {}, "created_at": now})
    rng = np.random.default_rng(seed)
    for step in steps:
        # The transition: a sigmoid in ln(step) centred on transition_step.
        progress = float(_sigmoid(np.asarray(3.0 * (np.log1p(step) - np.log(transition_step)))))
        table = _checkpoint_table(shape, step, progress, rng)
        store.write_part(aid, step, table, {"seconds": 1.0, "worker": "benchmark-fixture"})
    assert finalize(store, aid, None), "every part is written: the analysis must finish"
    return aid
