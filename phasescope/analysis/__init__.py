"""Measuring one checkpoint: its inputs (token batches, text prompts), the forward pass, the measures.

``run`` captures the pre-softmax scores in one forward pass and applies the pure measures of
``phasescope.measures``; ``inputs``, ``prompts`` and ``texts`` say what the model reads.
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

if TYPE_CHECKING:  # the re-exports, imported on first use (phasescope._lazy)
    from phasescope.analysis.inputs import Batch, repeated_random_tokens
    from phasescope.analysis.prompts import PromptFrame, prompt_frame, text_prompts
    from phasescope.analysis.run import (
        build_batch,
        capture_attention,
        measure_checkpoint,
        measure_landscape,
        run_local,
    )
    from phasescope.analysis.texts import BUILTIN_TEXTS

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "BUILTIN_TEXTS",
    "Batch",
    "PromptFrame",
    "build_batch",
    "capture_attention",
    "measure_checkpoint",
    "measure_landscape",
    "prompt_frame",
    "repeated_random_tokens",
    "run_local",
    "text_prompts",
]
