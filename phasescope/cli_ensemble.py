"""``phasescope ensemble``: one zoo recipe over several training seeds, analysed locally and compared.

Each seed's series (``zoo:<name>-seed<N>``, docs/zoo.md) is measured in this process with
``run_local``; ``phasescope.phases.ensemble`` then reports, per order parameter, each seed's transition
step, their spread, and how well the seeds' curves collapse onto one (docs/measures.md, "Seed
ensembles"). Kept apart from ``phasescope.cli`` so that module stays small; registered there.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

__all__ = ["ensemble", "format_report"]


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_report(report: dict[str, Any]) -> list[str]:
    """A report (``EnsembleReport.to_dict``) as lines of text for the terminal."""
    layer = "" if report["layer"] is None else f", layer {report['layer']}"
    lines = [f"{report['quantity']}{layer}"]
    for s in report["seeds"]:
        if not s["detected"]:
            lines.append(f"  {s['label']:>8}: {s['reason']}")
            continue
        head = "" if s["head"] is None else f" (head {s['head']})"
        ci = f" [{_num(s['step_ci_lo'])}, {_num(s['step_ci_hi'])}]" if s["step_ci_lo"] is not None else ""
        lines.append(
            f"  {s['label']:>8}: step {_num(s['step'])} ± {_num(s['step_sd'])}{ci}{head}; "
            f"t* {_num(s['t_star'])}, w {_num(s['width'], 3)} (ln t), {_num(s['before'], 3)} → {_num(s['after'], 3)}"
        )
    lines.append(
        f"  spread: {report['n_detected']} of {len(report['seeds'])} seeds, mean {_num(report['step_mean'])}, "
        f"SD {_num(report['step_sd'])}, range {_num(report['step_min'])}–{_num(report['step_max'])}, "
        f"SD / RMS per-seed error {_num(report['spread_ratio'], 2)}"
    )
    lines.append(
        f"  collapse: Q {_num(report['collapse_quality'], 4)} on u ∈ {report['u_range']}, "
        f"uncollapsed {_num(report['uncollapsed_quality'], 4)} (gain ×{_num(report['collapse_gain'], 1)})"
    )
    return lines


def ensemble(
    model: Annotated[
        str, typer.Argument(help="A zoo recipe, e.g. zoo:induction-2l (or zoo:induction-2l-every5).")
    ],
    seeds: Annotated[str, typer.Option(help="Training seeds: 0-4, 0,2,7.")] = "0-2",
    measure: Annotated[
        list[str] | None, typer.Option("--measure", "-m", help="Measures (repeat or comma-separate).")
    ] = None,
    quantity: Annotated[
        list[str] | None,
        typer.Option(help="Order parameters to report, measure.quantity (default every one measured)."),
    ] = None,
    checkpoints: Annotated[str, typer.Option(help="all | 0,25,50 | START:STOP[:EVERY] | log:N")] = "all",
    n_prompts: Annotated[int | None, typer.Option(help="Prompts per checkpoint.")] = None,
    train: Annotated[bool, typer.Option(help="Train the seeds that are missing first.")] = False,
    parallel: Annotated[int, typer.Option(min=1, help="Seeds trained at once (with --train).")] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (one JSON document).")
    ] = False,
    points: Annotated[bool, typer.Option(help="With --json: include the collapse points.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """Analyse a zoo recipe over several seeds: per-seed transition steps, their spread, the collapse."""
    from phasescope.analysis.run import run_local
    from phasescope.cli import parse_checkpoints
    from phasescope.errors import InvalidRequest
    from phasescope.models.loading import list_checkpoints
    from phasescope.phases.ensemble import ensemble_reports
    from phasescope.schemas import AnalysisRequest, InputSpec, select_steps
    from phasescope.zoo import get_variant, is_trained, parse_seeds, train_seeds

    if not model.startswith("zoo:"):
        raise InvalidRequest(f"{model}: ensembles are of zoo recipes (zoo:<name>)", field="model")
    chosen = parse_seeds(seeds)
    variants = {seed: get_variant(model, seed=seed) for seed in chosen}
    say = (lambda _: None) if quiet or as_json else typer.echo
    missing = [s for s, v in variants.items() if not is_trained(v.name)]
    if missing and not train:
        names = ", ".join(variants[s].model for s in missing)
        base = get_variant(model, seed=0).name
        raise InvalidRequest(
            f"not trained: {names}; run `phasescope zoo train {base} --seeds {seeds} --parallel 2` "
            "or pass --train",
            field="model",
        )
    if missing:
        say(f"training {len(missing)} seeds ({parallel} at a time)")
        train_seeds(variants[missing[0]].name, missing, parallel=parallel)
    names = [m.strip() for item in (measure or ["loss,heads"]) for m in item.split(",") if m.strip()]
    request = AnalysisRequest(
        model=variants[chosen[0]].model,
        checkpoints=parse_checkpoints(checkpoints),
        measures=names,
        inputs=InputSpec(n_prompts=n_prompts),
    )
    tables = {}
    for seed, variant in variants.items():
        t0 = time.perf_counter()
        steps = select_steps(request.checkpoints, list_checkpoints(variant.model), variant.model)
        tables[seed], _ = run_local(variant.model, steps, request.measures, request.inputs, request.params)
        say(f"{variant.model}: {len(steps)} checkpoints measured in {time.perf_counter() - t0:.1f} s")
    reports = [r.to_dict(points=points) for r in ensemble_reports(tables, quantity or None)]
    if as_json:
        typer.echo(json.dumps({"model": model, "seeds": chosen, "reports": reports}, indent=1))
        return
    for report in reports:
        typer.echo("\n".join(format_report(report)))
