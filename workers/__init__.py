"""RQ job functions and the worker process. The only part of the service that imports torch."""

__all__: list[str] = []
