"""Phase transitions across checkpoints: detection, findings, and their descriptions in words.

``detect`` fits where an order parameter m(t) changes; ``digest`` reduces a results table to the
order parameters per checkpoint; ``findings`` runs detection on them; ``describe`` groups transitions
that move together into sentences. No torch: the backend imports this.
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

if TYPE_CHECKING:  # the re-exports, imported on first use (phasescope._lazy)
    from phasescope.phases.describe import co_moving, summarise
    from phasescope.phases.detect import Transition, detect_transitions, fit_transition
    from phasescope.phases.digest import checkpoint_digest
    from phasescope.phases.findings import find_transitions

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "Transition",
    "checkpoint_digest",
    "co_moving",
    "detect_transitions",
    "find_transitions",
    "fit_transition",
    "summarise",
]
