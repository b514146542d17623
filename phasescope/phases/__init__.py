"""Phase transitions across checkpoints: detection, findings, and their descriptions in words.

``detect`` fits where an order parameter m(t) changes; ``digest`` reduces a results table to the
order parameters per checkpoint; ``susceptibility`` locates and judges the peak of χ(t);
``exponents`` fits critical exponents on each side of a transition; ``replicates`` reads per-prompt
values for their bootstraps; ``findings`` runs all of them on a results table; ``describe`` groups
transitions that move together into sentences. No torch: the backend imports this.
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

if TYPE_CHECKING:  # the re-exports, imported on first use (phasescope._lazy)
    from phasescope.phases.describe import co_moving, summarise
    from phasescope.phases.detect import Transition, detect_transitions, fit_transition
    from phasescope.phases.digest import checkpoint_digest
    from phasescope.phases.exponents import ExponentFit, fit_exponents
    from phasescope.phases.findings import find_transitions
    from phasescope.phases.susceptibility import SusceptibilityPeak, chi_peak, susceptibility_peaks

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "ExponentFit",
    "SusceptibilityPeak",
    "Transition",
    "checkpoint_digest",
    "chi_peak",
    "co_moving",
    "detect_transitions",
    "find_transitions",
    "fit_exponents",
    "fit_transition",
    "summarise",
    "susceptibility_peaks",
]
