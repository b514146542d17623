"""The registry entries of soft modes of the loss: the Hessian's spectral density by stochastic Lanczos quadrature, and per-head local learning coefficients."""

from __future__ import annotations

__all__: list[str] = []
