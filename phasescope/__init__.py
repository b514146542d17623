"""phasescope: the phase behaviour of transformer models, measured across layers, heads and checkpoints.

The library is importable without a web server or a queue. Heavy imports (torch, TransformerLens) live
in the submodules that need them, so ``import phasescope`` stays cheap for the backend and frontend.
"""

__version__ = "0.1.0"

# Bumped whenever a measure's numbers could change: it is part of every analysis id, so a stored
# result is never served for a request that would now compute something different.
MEASURES_VERSION = "1"

__all__ = ["MEASURES_VERSION", "__version__"]
