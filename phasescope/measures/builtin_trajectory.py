"""The registry entries of training as a trajectory: per-matrix and per-head velocity, kinetic energy, distance from initialisation, update cosines, and the trajectory's principal-component plane."""

from __future__ import annotations

__all__: list[str] = []
