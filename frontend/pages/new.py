"""New analysis: pick a model, checkpoints, measures and inputs; submit; follow the job; open the result."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from frontend import client
from frontend.components import error_state
from phasescope.measures import default_measures, measures
from phasescope.schemas import CheckpointSpacing, select_steps

dash.register_page(__name__, path="/new", name="New analysis", title="New analysis · phasescope")

_DONE = ("finished", "failed", "partial", "cancelled")


def _field(label: str, control: Any) -> list[Any]:
    return [html.Label(label), control]


def layout(model: str | None = None, **_: Any) -> html.Div:
    try:
        body = client.api().models(include_tl=True)
        options = [m["model"] for m in body.get("models", []) if m.get("available")] + body.get(
            "transformer_lens", []
        )
        problem = None
    except client.ApiError as exc:
        options, problem = [], f"The API could not list models: {exc.message}"
    value = model if model in options else (options[0] if options else None)
    return html.Div(
        [
            html.H1("New analysis"),
            error_state(problem, id="new-models-error") if problem else None,
            html.Div(
                className="form card",
                children=[
                    *_field(
                        "Model",
                        dcc.Dropdown(
                            id="new-model", options=options, value=value, clearable=False, searchable=True
                        ),
                    ),
                    *_field(
                        "Checkpoints",
                        html.Div(
                            [
                                dcc.RangeSlider(
                                    id="new-range",
                                    min=0,
                                    max=1,
                                    step=1,
                                    value=[0, 1],
                                    allowCross=False,
                                    allow_direct_input=False,
                                ),
                                html.Div(id="new-range-label", className="muted"),
                            ]
                        ),
                    ),
                    *_field(
                        "Spacing",
                        html.Div(
                            [
                                dcc.RadioItems(
                                    id="new-spacing",
                                    inline=True,
                                    value="all",
                                    options=[
                                        {"label": " every checkpoint in range ", "value": "all"},
                                        {"label": " log-spaced ", "value": "log"},
                                        {"label": " linear-spaced ", "value": "linear"},
                                    ],
                                ),
                                html.Span(" count "),
                                dcc.Input(
                                    id="new-count", type="number", min=2, value=16, style={"width": "70px"}
                                ),
                            ]
                        ),
                    ),
                    *_field(
                        "Measures",
                        dcc.Checklist(
                            id="new-measures",
                            # Every registered measure, its summary on hover; the registry's defaults
                            # (the cheap one-forward-pass measures) are ticked.
                            options=[
                                {"label": m.name, "value": m.name, "title": m.summary} for m in measures()
                            ],
                            value=list(default_measures()),
                            inline=True,
                            inputStyle={"marginRight": "4px", "marginLeft": "10px"},
                        ),
                    ),
                    *_field(
                        "Prompts",
                        html.Div(
                            [
                                dcc.Input(
                                    id="new-n-prompts",
                                    type="number",
                                    min=1,
                                    placeholder="default",
                                    style={"width": "90px"},
                                ),
                                html.Span(" prompts · "),
                                dcc.Input(
                                    id="new-seq-len", type="number", min=4, value=64, style={"width": "70px"}
                                ),
                                html.Span(" tokens (texts) · seed "),
                                dcc.Input(
                                    id="new-seed", type="number", min=0, value=0, style={"width": "60px"}
                                ),
                            ]
                        ),
                    ),
                    *_field(
                        "Texts (optional)",
                        dcc.Textarea(
                            id="new-texts",
                            placeholder="One text per paragraph (blank line "
                            "between); empty = the built-in set, or the zoo task's own data.",
                        ),
                    ),
                    *_field(
                        "API token",
                        html.Div(
                            [
                                dcc.Input(
                                    id="new-token",
                                    type="password",
                                    autoComplete="off",
                                    debounce=False,
                                    placeholder="needed when the service has one",
                                    style={"width": "320px"},
                                ),
                                html.Span(
                                    " kept in this browser tab until it closes; sent only with 'Run analysis'",
                                    className="muted",
                                ),
                            ]
                        ),
                    ),
                    html.Div(),
                    html.Div(
                        [
                            html.Button("Run analysis", id="new-submit"),
                            html.Span(id="new-summary", className="muted"),
                        ]
                    ),
                ],
            ),
            html.Div(id="new-error"),
            html.Div(id="new-progress"),
            dcc.Store(id="new-aid"),
            dcc.Interval(id="new-poll", interval=700, disabled=True),
            dcc.Location(id="new-go", refresh=True),
        ]
    )


@dash.callback(
    Output("new-range", "max"),
    Output("new-range", "value"),
    Output("new-range", "marks"),
    Output("new-error", "children", allow_duplicate=True),
    Input("new-model", "value"),
    prevent_initial_call="initial_duplicate",
)
def _model_steps(model: str | None) -> tuple[Any, ...]:
    if not model:
        return 1, [0, 1], {}, None
    try:
        steps = client.api().checkpoints(model)
    except client.ApiError as exc:
        return 1, [0, 1], {}, error_state(exc.message)
    n = len(steps)
    every = max(1, n // 8)
    marks = {i: str(s) for i, s in enumerate(steps) if i % every == 0 or i == n - 1}
    return max(1, n - 1), [0, max(0, n - 1)], marks, None


def _selection(model: str, lo: int, hi: int, spacing: str, count: int | None) -> tuple[Any, list[int]]:
    steps = client.api().checkpoints(model)
    chosen = steps[lo : hi + 1]
    if spacing == "all":
        return ("all" if (lo, hi) == (0, len(steps) - 1) else chosen), chosen
    picked = select_steps(CheckpointSpacing(count=max(1, int(count or 2)), spacing=spacing), chosen, model)
    return picked, picked


@dash.callback(
    Output("new-range-label", "children"),
    Input("new-model", "value"),
    Input("new-range", "value"),
    Input("new-spacing", "value"),
    Input("new-count", "value"),
)
def _describe(model: str | None, rng: list[int], spacing: str, count: int | None) -> str:
    if not model or not rng:
        return ""
    try:
        _, picked = _selection(model, rng[0], rng[1], spacing, count)
    except Exception as exc:  # the API's words, or a selection that picks nothing
        return str(getattr(exc, "message", exc))
    return f"{len(picked)} checkpoints: steps {picked[0]} … {picked[-1]}" if picked else "no checkpoints"


# Fired once as the page renders (its Input is on this page; the Store lives in the app's layout).
@dash.callback(Output("new-token", "value"), Input("new-submit", "id"), State("auth-token", "data"))
def _restore_token(_: str, stored: str | None) -> Any:
    """The token this browser tab last submitted with, back in its field."""
    return stored or no_update


def _auth_message(token: str | None) -> str:
    if not token:
        return (
            "This service needs an API token to start an analysis: enter it in the field 'API token' "
            "(the PHASESCOPE_API_TOKEN the service was started with). Nothing was submitted."
        )
    return "The API did not accept this token: check the field 'API token'. Nothing was submitted."


@dash.callback(
    Output("new-aid", "data"),
    Output("new-error", "children"),
    Output("new-poll", "disabled"),
    Input("new-submit", "n_clicks"),
    State("new-model", "value"),
    State("new-range", "value"),
    State("new-spacing", "value"),
    State("new-count", "value"),
    State("new-measures", "value"),
    State("new-n-prompts", "value"),
    State("new-seq-len", "value"),
    State("new-seed", "value"),
    State("new-texts", "value"),
    State("new-token", "value"),
    prevent_initial_call=True,
)
def _submit(
    clicks: int | None,
    model: str,
    rng: list[int],
    spacing: str,
    count: int | None,
    measures: list[str],
    n_prompts: int | None,
    seq_len: int | None,
    seed: int | None,
    texts: str | None,
    token: str | None,
) -> tuple[Any, ...]:
    """Submit as the user: their token (from the form) is the only credential the API call carries."""
    if not clicks:  # only a click submits (never the page's own first render)
        raise PreventUpdate
    token = (token or "").strip() or None
    inputs: dict[str, Any] = {"seed": int(seed or 0)}
    if n_prompts:
        inputs["n_prompts"] = int(n_prompts)
    if seq_len:
        inputs["seq_len"] = int(seq_len)
    if texts and texts.strip():
        inputs["texts"] = [p.strip() for p in texts.split("\n\n") if p.strip()]
    try:
        checkpoints, _ = _selection(model, rng[0], rng[1], spacing, count)
        state = client.api().submit(
            model, checkpoints=checkpoints, measures=measures, inputs=inputs, token=token
        )
    except client.ApiError as exc:  # shown as the API words it, with the field it names
        if exc.status_code == 401:  # the field keeps what was typed, to be corrected
            return no_update, error_state(_auth_message(token), id="new-auth-error"), True
        where = f" (field: {exc.field})" if exc.field else ""
        return no_update, error_state(f"{exc.message}{where}"), True
    except Exception as exc:
        return no_update, error_state(str(getattr(exc, "message", exc))), True
    return state["id"], None, False


# A callback whose output is in the app's layout (the Store) and whose input arrives with this page is
# called as the page renders, prevent_initial_call or not: so it only writes once there is an analysis.
@dash.callback(
    Output("auth-token", "data"),
    Input("new-aid", "data"),
    State("new-token", "value"),
    prevent_initial_call=True,
)
def _remember_token(aid: str | None, token: str | None) -> Any:
    """Keep the token an analysis was accepted with in this tab's session (sessionStorage)."""
    return ((token or "").strip() or None) if aid else no_update


@dash.callback(
    Output("new-progress", "children"),
    Output("new-poll", "disabled", allow_duplicate=True),
    Output("new-go", "href"),
    Input("new-poll", "n_intervals"),
    State("new-aid", "data"),
    prevent_initial_call=True,
)
def _follow(_: int, aid: str | None) -> tuple[Any, ...]:
    if not aid:
        return no_update, True, no_update
    try:
        state = client.status(aid)
    except client.ApiError as exc:
        return error_state(exc.message), False, no_update
    p = state.get("progress", {})
    running = ", ".join(f"step {r['checkpoint']} ({r.get('stage', 'running')})" for r in p.get("running", []))
    errors = [
        html.Div(f"step {e['checkpoint']}: {e.get('error')}", className="error")
        for e in state.get("errors", [])
    ]
    body = html.Div(
        className="card",
        id="new-status",
        children=[
            html.Div(
                [
                    html.B("Analysis "),
                    dcc.Link(aid, href=f"/analyses/{aid}"),
                    " · ",
                    html.Span(
                        state["status"], id="new-status-text", className=f"status status-{state['status']}"
                    ),
                ]
            ),
            html.Progress(
                value=str(p.get("done", 0)), max=str(max(1, p.get("total", 1))), style={"width": "100%"}
            ),
            html.Div(
                f"{p.get('done', 0)} / {p.get('total', 0)} checkpoints"
                + (f" · {running}" if running else ""),
                className="muted",
            ),
            *errors,
        ],
    )
    if state["status"] == "finished":
        return body, True, f"/analyses/{aid}"
    return body, state["status"] in _DONE, no_update
