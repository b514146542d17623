/* A checkpoint-slider step in the browser (docs/dashboard.md "Large analyses").
 *
 * Figures over training steps do not change with the checkpoint: only their cursor line (the shape
 * named "cursor", frontend/plotting.py mark_steps) moves, here, by Plotly.relayout, with no server
 * round trip and no redraw of their traces. Only tabs with per-checkpoint figures ask the server
 * (the "step-request" store, frontend/pages/analysis.py _step), which then sends those figures alone.
 */
function moveCursors(x) {
    for (const gd of document.querySelectorAll("#tab-content .js-plotly-plot")) {
        const shapes = (gd.layout && gd.layout.shapes) || [];
        const update = {};
        shapes.forEach(function (s, k) {
            if (s.name !== "cursor") { return; }
            update["shapes[" + k + "].x0"] = x;
            update["shapes[" + k + "].x1"] = x;
            // Shapes count in an axis's autorange: hold the axis where it is, so moving the
            // cursor redraws the shape only, not the axes and every trace.
            const axis = "xaxis" + (s.xref || "x").slice(1);
            const full = gd._fullLayout && gd._fullLayout[axis];
            if (full && full.range) { update[axis + ".range"] = full.range.slice(); }
        });
        if (Object.keys(update).length) { window.Plotly.relayout(gd, update); }
    }
}

window.dash_clientside = Object.assign({}, window.dash_clientside, {
    phasescope: {
        step: function (idx, tab, xscale, store) {
            const no = window.dash_clientside.no_update;
            if (!store) { return [no, no, no]; }
            const steps = store.steps;
            const i = Math.max(0, Math.min((idx === null || idx === undefined) ? steps.length - 1 : idx,
                                           steps.length - 1));
            // Plot positions of every step on each axis scale, computed by the server (step_axis).
            const x = (store.cursor_x[xscale] || store.cursor_x.linear)[i];
            // After this callback returns (a timeout): the server's request, if any, leaves first and
            // the browser moves the cursors while the server draws.
            if (window.Plotly) { setTimeout(function () { moveCursors(x); }, 0); }
            const label = "step " + steps[i];
            if ((store.step_tabs || []).indexOf(tab) >= 0) {
                // The server redraws this tab's per-checkpoint figures and then sets rendered-index.
                return [{index: i, tab: tab}, no, label];
            }
            return [no, i, label];  // nothing else to draw: this frame is shown
        }
    }
});
