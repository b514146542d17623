"""Analysis view (``/analyses/<id>``): one tab per family, a shared checkpoint slider, state in the URL.

The page is built from the URL (path + query string, ``frontend.urlstate``), and every control writes
its value back into the address bar (``history.replaceState``, so the page is not re-routed), so the
address bar is always a share link that restores this exact view.
"""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from frontend import client, data
from frontend.components import empty_state, error_state, status_badge
from frontend.figures import LABELS, step_axis
from frontend.tabs import PER_CHECKPOINT, RENDERERS
from frontend.tabs_dynamics import tab_measures
from frontend.urlstate import KEYS, parse_state

dash.register_page(
    __name__, path_template="/analyses/<analysis_id>", name="Analysis", title="Analysis · phasescope"
)

TAB_LABELS = {
    "overview": "Overview",
    "entropy": "Entropy",
    "thermo": "Thermodynamics",
    "spectra": "Spectra",
    "landscape": "Energy landscape",
    "dynamics": "Dynamics",
    "fields": "Fields",
    "patterns": "Attention patterns",
}
# Tabs shown only to an analysis that ran one of their measures (``Measure.tab``), or asked for by the URL.
MEASURE_TABS = ("dynamics", "fields")
# Which controls each tab uses (the others are hidden on that tab; their values stay in the URL).
USES = {
    "overview": {"quantity", "layer", "head", "xscale", "yscale"},
    "entropy": {"layer", "head", "xscale", "yscale"},
    "thermo": {"layer", "head", "beta", "xscale", "yscale"},
    "spectra": {"layer", "head", "matrix", "xscale", "yscale"},
    "landscape": {"layer", "head", "xscale", "yscale"},
    "dynamics": {"layer", "head", "xscale", "yscale"},
    "fields": {"layer", "head", "xscale", "yscale"},
    "patterns": {"layer", "head", "prompt"},
}
CONTROLS = ("quantity", "layer", "head", "beta", "matrix", "prompt", "xscale", "yscale")


def _control(name: str, label: str, component: Any, wide: bool = False) -> html.Div:
    return html.Div(
        [html.Label(label), component], id=f"ctl-{name}", className="control" + (" wide" if wide else "")
    )


def _index_options(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"label": f"all {prefix}s", "value": "all"}] + [
        {"label": f"{prefix} {i}", "value": i} for i in range(n)
    ]


def layout(analysis_id: str | None = None, **query: Any) -> html.Div:
    state = parse_state(query)
    try:
        meta = data.analysis_meta(str(analysis_id))
    except client.ApiError as exc:
        return html.Div([html.H1(f"Analysis {analysis_id}"), error_state(exc.message)])
    steps = meta.get("done_checkpoints") or meta["checkpoints"]
    head = html.Div(
        className="header",
        children=[
            html.Div(
                [
                    html.H1(
                        [
                            f"{meta['model']} ",
                            html.Span(meta["id"], className="muted", style={"fontSize": "13px"}),
                        ]
                    ),
                    html.Div(
                        [
                            status_badge(meta["status"]),
                            f" · {len(meta['checkpoints'])} checkpoints · measures: ",
                            ", ".join(meta["measures"]),
                            # The model's shape as the status gives it (absent until it is known).
                            f" · {meta['n_layers']} layers × {meta['n_heads']} heads"
                            if meta["n_layers"] and meta["n_heads"]
                            else "",
                        ],
                        className="kv",
                        id="analysis-status",
                    ),
                ]
            ),
            html.Div(
                className="share",
                children=[
                    dcc.Input(
                        id="share-url", readOnly=True, value="", debounce=True, style={"width": "460px"}
                    ),
                    html.Div(
                        [
                            dcc.Clipboard(
                                target_id="share-url",
                                id="copy-link",
                                title="Copy link",
                                style={"display": "inline-block", "fontSize": "18px", "cursor": "pointer"},
                            ),
                            html.Span(" copy link", className="muted"),
                        ]
                    ),
                ],
            ),
        ],
    )
    if not meta["finished"]:
        p = meta["progress"]
        waiting = html.Div(
            className="card",
            children=[
                html.Div(
                    f"{meta['status']}: {p.get('done', 0)} of {p.get('total', 0)} checkpoints done; this page opens "
                    "the results when the analysis finishes."
                ),
                html.Progress(
                    value=str(p.get("done", 0)), max=str(max(1, p.get("total", 1))), style={"width": "100%"}
                ),
                *[error_state(f"step {e['checkpoint']}: {e.get('error')}") for e in meta["errors"]],
            ],
        )
        done = meta["status"] in ("failed", "cancelled", "partial")
        poll = dcc.Interval(id="analysis-poll", interval=1000, disabled=done)
        if meta["status"] != "partial" or not steps:
            return html.Div([head, waiting, poll, dcc.Location(id="analysis-reload", refresh=True)])
    if not steps:
        return html.Div([head, empty_state("This analysis has no finished checkpoint.")])
    step = state["checkpoint"] if state["checkpoint"] in steps else steps[-1]
    options = [{"label": LABELS.get(q, q), "value": q} for q in meta["options"]]
    quantity = (
        state["quantity"]
        if state["quantity"] in meta["options"]
        else (meta["options"][0] if meta["options"] else None)
    )
    every = max(1, len(steps) // 10)
    controls = html.Div(
        className="controls",
        children=[
            _control(
                "quantity",
                "Order parameter",
                dcc.Dropdown(id="v-quantity", options=options, value=quantity, clearable=False),
                wide=True,
            ),
            _control(
                "layer",
                "Layer",
                dcc.Dropdown(
                    id="v-layer",
                    options=_index_options(meta["n_layers"], "layer"),
                    value=state["layer"],
                    clearable=False,
                ),
            ),
            _control(
                "head",
                "Head",
                dcc.Dropdown(
                    id="v-head",
                    options=_index_options(meta["n_heads"], "head"),
                    value=state["head"],
                    clearable=False,
                ),
            ),
            _control(
                "beta",
                "β cursor",
                dcc.Input(
                    id="v-beta",
                    type="number",
                    min=0.01,
                    max=1000,
                    step="any",
                    value=state["beta"],
                    debounce=True,
                    style={"width": "90px"},
                ),
            ),
            _control(
                "matrix",
                "Weight matrix",
                dcc.Dropdown(
                    id="v-matrix",
                    options=["W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_E", "W_pos", "W_U"],
                    value=state["matrix"] or "W_Q",
                    clearable=False,
                ),
            ),
            _control(
                "prompt",
                "Prompt",
                dcc.Input(
                    id="v-prompt",
                    type="number",
                    min=0,
                    step=1,
                    value=state["prompt"],
                    debounce=True,
                    style={"width": "70px"},
                ),
            ),
            _control(
                "xscale",
                "Step axis",
                dcc.RadioItems(id="v-xscale", options=["log", "linear"], value=state["xscale"], inline=True),
            ),
            _control(
                "yscale",
                "Value axis",
                dcc.RadioItems(id="v-yscale", options=["linear", "log"], value=state["yscale"], inline=True),
            ),
        ],
    )
    slider = html.Div(
        className="slider-row",
        children=[
            html.Button("▶ play", id="play", className="secondary", title="Step through the checkpoints"),
            html.Div(
                dcc.Slider(
                    id="v-checkpoint",
                    min=0,
                    max=len(steps) - 1,
                    step=1,
                    value=steps.index(step),
                    marks={i: str(s) for i, s in enumerate(steps) if i % every == 0 or i == len(steps) - 1},
                    updatemode="mouseup",
                    allow_direct_input=False,
                ),
                className="slider",
            ),
            html.Span(f"step {step}", id="checkpoint-label", className="kv", style={"minWidth": "90px"}),
            dcc.Interval(id="play-tick", interval=800, disabled=True),
            dcc.Store(id="rendered-index", data=steps.index(step)),  # the checkpoint the plots show now
        ],
    )
    tabs = dcc.Tabs(
        id="v-tab",
        value=state["tab"],
        children=[
            dcc.Tab(label=v, value=k, id=f"tab-{k}")
            for k, v in TAB_LABELS.items()
            if k not in MEASURE_TABS or k == state["tab"] or tab_measures(meta, k)
        ],
    )
    return html.Div(
        [
            head,
            tabs,
            controls,
            slider,
            dcc.Store(
                id="view-meta",
                data={
                    "id": meta["id"],
                    "steps": steps,
                    "meta": meta,
                    # For a slider step in the browser (assets/slider.js): each step's cursor position
                    # on either step axis, and the tabs that have per-checkpoint figures to redraw.
                    "cursor_x": {scale: step_axis(steps, scale).tolist() for scale in ("log", "linear")},
                    "step_tabs": sorted(PER_CHECKPOINT),
                },
            ),
            dcc.Store(id="step-request"),  # {index, tab}: a slider step the server has figures to redraw for
            # The first tab is drawn here, in the page itself, so the first paint needs no further callback.
            # (No dcc.Loading: it hides the old graphs while loading, and Plotly then lays them out at zero
            # size. The content dims instead, by CSS on Dash's own data-dash-is-loading attribute.)
            html.Div(
                _content(meta["id"], meta, {**state, "quantity": quantity, "checkpoint": step}),
                id="tab-content",
                className="tab-content",
            ),
        ]
    )


@dash.callback(
    Output("analysis-reload", "href"),
    Output("analysis-poll", "disabled"),
    Input("analysis-poll", "n_intervals"),
    State("_pages_location", "pathname"),
    State("_pages_location", "search"),
    prevent_initial_call=True,
)
def _poll(_: int, pathname: str, search: str | None) -> tuple[Any, bool]:
    aid = pathname.rstrip("/").rsplit("/", 1)[-1]
    try:
        status = client.status(aid)["status"]
    except client.ApiError:
        return no_update, False
    if status in ("finished", "partial"):
        return pathname + (search or ""), True
    return no_update, status in ("failed", "cancelled")


_INPUTS = [
    Input("v-tab", "value"),
    Input("v-checkpoint", "value"),
    Input("v-quantity", "value"),
    Input("v-layer", "value"),
    Input("v-head", "value"),
    Input("v-beta", "value"),
    Input("v-xscale", "value"),
    Input("v-yscale", "value"),
    Input("v-matrix", "value"),
    Input("v-prompt", "value"),
]


def _state(values: tuple[Any, ...], steps: list[int]) -> dict[str, Any]:
    raw = dict(
        zip(
            (
                "tab",
                "checkpoint",
                "quantity",
                "layer",
                "head",
                "beta",
                "xscale",
                "yscale",
                "matrix",
                "prompt",
            ),
            values,
            strict=True,
        )
    )
    index = raw["checkpoint"] if isinstance(raw["checkpoint"], int) else len(steps) - 1
    raw["checkpoint"] = steps[max(0, min(index, len(steps) - 1))]
    return parse_state({k: v for k, v in raw.items() if v is not None})


def _content(aid: str, meta: dict[str, Any], state: dict[str, Any]) -> html.Div:
    try:
        content = RENDERERS[state["tab"]](aid, meta, state, state["checkpoint"])
    except client.ApiError as exc:
        content = [error_state(exc.message)]
    return html.Div(content, id=f"content-{state['tab']}")


# Every control but the slider redraws the whole tab; the slider (a State here) has its own path below.
_RENDER_INPUTS = [State("v-checkpoint", "value") if i.component_id == "v-checkpoint" else i for i in _INPUTS]


@dash.callback(
    Output("tab-content", "children"),
    Output("rendered-index", "data"),
    *_RENDER_INPUTS,
    State("view-meta", "data"),
    prevent_initial_call=True,
)
def _render(*args: Any) -> tuple[Any, int]:
    *values, store = args
    state = _state(tuple(values), store["steps"])
    return _content(store["id"], store["meta"], state), store["steps"].index(state["checkpoint"])


# A slider step, in the browser: the label, the cursor line of every figure over training steps
# (Plotly.relayout, no server round trip), and a step-request only where the tab has per-checkpoint figures.
dash.clientside_callback(
    ClientsideFunction(namespace="phasescope", function_name="step"),
    Output("step-request", "data"),
    Output("rendered-index", "data", allow_duplicate=True),
    Output("checkpoint-label", "children"),
    Input("v-checkpoint", "value"),
    State("v-tab", "value"),
    State("v-xscale", "value"),
    State("view-meta", "data"),
    prevent_initial_call=True,
)


def _graphs(tree: Any, found: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """Every figure_card's graph figure and CSV link in a component tree, by (type, name)."""
    if isinstance(tree, (list, tuple)):
        for child in tree:
            _graphs(child, found)
        return found
    ident = getattr(tree, "id", None)
    if isinstance(ident, dict) and ident.get("type") == "fig":
        found[("fig", ident["name"])] = tree.figure
    elif isinstance(ident, dict) and ident.get("type") == "fig-csv":
        found[("fig-csv", ident["name"])] = tree.href
    children = getattr(tree, "children", None)
    if children is not None and not isinstance(children, str):
        _graphs(children, found)
    return found


@dash.callback(
    Output({"type": "fig", "name": ALL}, "figure"),
    Output({"type": "fig-csv", "name": ALL}, "href"),
    Output("tab-content", "children", allow_duplicate=True),
    Output("rendered-index", "data", allow_duplicate=True),
    Input("step-request", "data"),
    *[State(i.component_id, i.component_property) for i in _INPUTS],
    State("view-meta", "data"),
    prevent_initial_call=True,
)
def _step(request: dict[str, Any] | None, *args: Any) -> tuple[Any, ...]:
    """A slider step on a tab with per-checkpoint figures: those figures (and their CSV links) only.

    The figures over training steps are sent back as no_update (their cursor moved in the browser), so
    neither they nor their data are encoded, sent or redrawn. The patterns tab is small and redrawn whole.
    """
    *values, store = args
    figs, csvs = ctx.outputs_list[0], ctx.outputs_list[1]
    if not request:
        return [no_update] * len(figs), [no_update] * len(csvs), no_update, no_update
    values[1] = request["index"]  # the slider's value this request is for
    state = _state(tuple(values), store["steps"])
    index = store["steps"].index(state["checkpoint"])
    if state["tab"] == "patterns" or state["tab"] != request["tab"]:
        return (
            [no_update] * len(figs),
            [no_update] * len(csvs),
            _content(store["id"], store["meta"], state),
            index,
        )
    found = _graphs(_content(store["id"], store["meta"], state), {})
    wanted = PER_CHECKPOINT.get(state["tab"], set())

    def pick(kind: str, outputs: list[dict[str, Any]]) -> list[Any]:
        return [
            found.get((kind, o["id"]["name"]), no_update) if o["id"]["name"] in wanted else no_update
            for o in outputs
        ]

    return pick("fig", figs), pick("fig-csv", csvs), no_update, index


@dash.callback(*[Output(f"ctl-{name}", "style") for name in CONTROLS], Input("v-tab", "value"))
def _visible_controls(tab: str) -> list[dict[str, str]]:
    uses = USES.get(tab, set())
    return [{} if name in uses else {"display": "none"} for name in CONTROLS]


@dash.callback(
    Output("play-tick", "disabled"),
    Output("play", "children"),
    Input("play", "n_clicks"),
    State("play-tick", "disabled"),
    prevent_initial_call=True,
)
def _play(_: int, stopped: bool) -> tuple[bool, str]:
    return (False, "❚❚ pause") if stopped else (True, "▶ play")


@dash.callback(
    Output("v-checkpoint", "value"),
    Input("play-tick", "n_intervals"),
    State("v-checkpoint", "value"),
    State("v-checkpoint", "max"),
    State("rendered-index", "data"),
    prevent_initial_call=True,
)
def _advance(_: int, value: int, top: int, rendered: int | None) -> Any:
    # Wait for the plots to show this frame: ticks faster than a render would otherwise make Dash
    # drop every stale render and never draw one.
    if rendered != value:
        return no_update
    return 0 if value >= top else value + 1


# The URL follows the controls without re-routing the page: replaceState, not a dcc.Location update.
dash.clientside_callback(
    """
    function(tab, idx, quantity, layer, head, beta, xscale, yscale, matrix, prompt, store) {
        if (!store) { return window.dash_clientside.no_update; }
        const steps = store.steps;
        const i = Math.max(0, Math.min((idx === null || idx === undefined) ? steps.length - 1 : idx, steps.length - 1));
        const state = {tab: tab, quantity: quantity, layer: layer, head: head, checkpoint: steps[i], beta: beta,
                       xscale: xscale, yscale: yscale, matrix: matrix, prompt: prompt};
        const params = new URLSearchParams();
        for (const key of KEYS) {
            const v = state[key];
            if (v !== null && v !== undefined && v !== "") { params.set(key, String(v)); }
        }
        const url = window.location.pathname + "?" + params.toString();
        window.history.replaceState(window.history.state, "", url);
        return window.location.origin + url;
    }
    """.replace("KEYS", json.dumps(list(KEYS))),
    Output("share-url", "value"),
    *_INPUTS,
    Input("view-meta", "data"),
)
