"""The dashboard: Dash + Plotly pages that read analyses through the REST API (never torch, never the store)."""

__all__: list[str] = []
