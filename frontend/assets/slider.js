/* A checkpoint-slider step in the browser (docs/dashboard.md "Large analyses").
 *
 * Figures over training steps do not change with the checkpoint: only their cursor line (the shape
 * named "cursor", frontend/figures.py _mark_steps) moves, here, by Plotly.relayout, with no server
 * round trip and no redraw of their traces. Only tabs with per-checkpoint figures ask the server
 * (the "step-request" store, frontend/pages/analysis.py _step), which then sends those figures alone.
 */
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
            if (window.Plotly) {
                for (const gd of document.querySelectorAll("#tab-content .js-plotly-plot")) {
                    const shapes = (gd.layout && gd.layout.shapes) || [];
                    const update = {};
                    shapes.forEach(function (s, k) {
                        if (s.name === "cursor") { update["shapes[" + k + "].x0"] = x; update["shapes[" + k + "].x1"] = x; }
                    });
                    if (Object.keys(update).length) { window.Plotly.relayout(gd, update); }
                }
            }
            const label = "step " + steps[i];
            if ((store.step_tabs || []).indexOf(tab) >= 0) {
                // The server redraws this tab's per-checkpoint figures and then sets rendered-index.
                return [{index: i, tab: tab}, no, label];
            }
            return [no, i, label];  // nothing else to draw: this frame is shown
        }
    }
});
