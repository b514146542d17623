"""The phasescope REST API (FastAPI). Never imports torch: jobs are enqueued by dotted name."""

__all__: list[str] = []
