"""Phase transitions across checkpoints: detection, findings, and their descriptions in words.

``detect`` fits where an order parameter m(t) changes; ``digest`` reduces a results table to the
order parameters per checkpoint; ``findings`` runs detection on them; ``describe`` groups transitions
that move together into sentences. No torch: the backend imports this.
"""
