"""One router per resource: analyses, models, health."""

__all__: list[str] = []
