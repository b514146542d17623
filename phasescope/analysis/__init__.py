"""Measuring one checkpoint: its inputs (token batches, text prompts), the forward pass, the measures.

``run`` captures the pre-softmax scores in one forward pass and applies the pure measures of
``phasescope.measures``; ``inputs``, ``prompts`` and ``texts`` say what the model reads.
"""
