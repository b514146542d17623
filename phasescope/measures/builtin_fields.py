"""The registry entries of activation fields: residual-stream flow, correlation functions, the mean-field check of MLP pre-activations."""

from __future__ import annotations

__all__: list[str] = []
