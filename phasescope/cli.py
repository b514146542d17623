"""The ``phasescope`` command: the zoo, model listings, local analyses, and the service (api, worker, redis).

User mistakes end in one clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.models import OptionInfo

from phasescope.cli_ensemble import ensemble as ensemble_command
from phasescope.errors import PhasescopeError

__all__ = ["app", "main", "parse_checkpoints"]

app = typer.Typer(
    help="Measure the phase behaviour of transformer models across layers, heads and checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(
    help="Small models we train ourselves, with real phase transitions.", no_args_is_help=True
)
app.add_typer(zoo_app, name="zoo")


def _program(name: str) -> Any:
    """The object the ``phasescope.programs`` entry point ``name`` names (pyproject.toml).

    ``phasescope api`` serves the API and dashboard, ``phasescope worker`` runs a worker: both live in
    packages above the library, which it reaches through its installed metadata, never by import.
    """
    from importlib.metadata import entry_points

    found = entry_points(group="phasescope.programs", name=name)
    if not found:
        _fail(f"'phasescope {name}' is not installed here: run 'pip install -e .' in the repository")
    return next(iter(found)).load()


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "list[", "literal")))
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse_checkpoints(text: str) -> object:
    """CLI checkpoint syntax → a selection: ``all``, ``last``, ``0,25,50``, ``100:500[:every]``, ``log:8``."""
    from phasescope.schemas import CheckpointRange, CheckpointSpacing

    text = text.strip()
    if text in ("all", "last"):
        return text
    if text.startswith(("log:", "linear:")):
        spacing, count = text.split(":", 1)
        return CheckpointSpacing(count=int(count), spacing=spacing)
    if ":" in text:
        parts = [p.strip() for p in text.split(":")]
        start = int(parts[0]) if parts[0] else 0
        stop = int(parts[1]) if len(parts) > 1 and parts[1] else None
        every = int(parts[2]) if len(parts) > 2 and parts[2] else 1
        return CheckpointRange(start=start, stop=stop, every=every)
    return [int(s) for s in text.split(",") if s.strip()]


@zoo_app.command("list")
def zoo_list() -> None:
    """List the zoo series and whether each is trained."""
    from phasescope.zoo import ZOO, is_trained

    for name, spec in sorted(ZOO.items()):
        state = "trained" if is_trained(name) else "not trained"
        typer.echo(f"zoo:{name:<16} {state:<12} {spec.description}")


@zoo_app.command("train")
def zoo_train(
    name: Annotated[
        str,
        typer.Argument(help="Series name, e.g. induction-2l or induction-2l-seed3 (with or without 'zoo:')."),
    ],
    seed: Annotated[int | None, typer.Option(help="Training seed (default the name's, 0).")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Several seeds, one series each: 0-4, 0,2,7 (zoo:<name>-seed<N>).")
    ] = None,
    every: Annotated[
        int | None, typer.Option(help="Also checkpoint every N steps (series zoo:<name>-every<N>).")
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Seeds trained at once, one process each.")] = 1,
    service: Annotated[
        bool, typer.Option(help="Queue one job per seed on the running service; its workers train them.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Retrain even if the series exists.")] = False,
) -> None:
    """Train a zoo series (or one per seed) and write it in the phasescope checkpoint format."""
    from phasescope.zoo import get_variant, parse_seeds, train_seeds

    if seed is not None and seeds is not None:
        _fail("give --seed or --seeds, not both")
    variant = get_variant(name, seed=seed, every=every)
    chosen = parse_seeds(seeds) if seeds is not None else [variant.seed]
    t0 = time.perf_counter()
    if service:
        from phasescope.zoo.service import train_on_service

        if force:
            _fail("--force is not available with --service: delete the series directory first")
        train_on_service([get_variant(variant.name, seed=s).name for s in chosen], say=typer.echo)
        typer.echo(f"{len(chosen)} series ready in {time.perf_counter() - t0:.1f} s")
        return
    if len(chosen) == 1 and parallel == 1:
        from phasescope.zoo import train_series

        path = train_series(variant.name, seed=chosen[0], progress=True, force=force)
        typer.echo(
            f"{get_variant(variant.name, seed=chosen[0]).model} ready in {path} ({time.perf_counter() - t0:.1f} s)"
        )
        return

    def done(run: Any) -> None:
        how = f"trained in {run.seconds:.1f} s" if run.trained else "already trained"
        typer.echo(f"{run.model} {how} -> {run.path}")

    runs = train_seeds(variant.name, chosen, parallel=parallel, force=force, on_done=done)
    typer.echo(f"{len(runs)} series ready in {time.perf_counter() - t0:.1f} s")


@app.command("models")
def models(
    model: Annotated[str | None, typer.Argument(help="A model string; omit to list the catalogue.")] = None,
) -> None:
    """List analysable models, or the checkpoints (training steps) of one model."""
    from phasescope.models.loading import list_checkpoints, list_models

    if model is None:
        for info in list_models():
            n = "" if info.n_checkpoints is None else f"{info.n_checkpoints} checkpoints"
            state = "" if info.available else "(not trained: phasescope zoo train)"
            typer.echo(f"{info.model:<40} {info.kind:<10} {n:<18} {state} {info.description}")
        typer.echo(
            "tl:<name>                                any TransformerLens pretrained name (needs internet)"
        )
        return
    steps = list_checkpoints(model)
    typer.echo(f"{model}: {len(steps)} checkpoints")
    typer.echo(" ".join(str(s) for s in steps))


def _measure_help() -> str:
    from phasescope.measures.registry import default_measures, measures

    listed = "; ".join(f"{m.name}: {m.summary}" for m in measures())
    return (
        f"Comma-separated measures (or the option repeated), or 'all' for every one. {listed}. "
        f"Default: {','.join(default_measures())}."
    )


class _MeasureOption(OptionInfo):
    """``--measure``, whose help lists the measures registered when the command is built (every run
    builds it), so a measure registered after this module was imported is listed too."""

    @property  # type: ignore[override]
    def help(self) -> str:
        return _measure_help()

    @help.setter
    def help(self, value: str | None) -> None:
        pass  # OptionInfo.__init__ assigns one; the registry's is the one shown


@app.command("analyze")
def analyze(
    model: Annotated[
        str, typer.Argument(help="zoo:<name>, tl:<name> or a local path under the model roots.")
    ],
    # What typer.Option("--measure", "-m") builds (under Annotated the first name travels as `default`).
    measure: Annotated[
        list[str] | None, _MeasureOption(default="--measure", param_decls=("-m",), show_default=False)
    ] = None,
    checkpoints: Annotated[
        str, typer.Option(help="all | last | 0,25,50 | START:STOP[:EVERY] | log:N | linear:N")
    ] = "all",
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default ./phasescope-out/<id>).")
    ] = None,
    texts: Annotated[
        Path | None, typer.Option(help="A text file, one prompt text per blank-line-separated paragraph.")
    ] = None,
    n_prompts: Annotated[int | None, typer.Option(help="Prompts per checkpoint.")] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per prompt (text inputs).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for prompts and probes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:n].")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto | float32 | bfloat16 | float16: what the weights load in.")
    ] = "auto",
    prompt_style: Annotated[
        str, typer.Option(help="family (BOS / [CLS] ... [SEP] as the model expects) | raw (plain windows).")
    ] = "family",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Run measures on a model's checkpoints locally; write Parquet tables and a JSON summary."""
    from tqdm import tqdm

    from phasescope.analysis.run import pick_device, run_local
    from phasescope.config import get_settings
    from phasescope.models.identity import resolve_request
    from phasescope.phases.digest import checkpoint_digest
    from phasescope.schemas import AnalysisRequest, InputSpec
    from phasescope.service.store import write_local_result

    text_list = None
    if texts is not None:
        if not texts.is_file():
            _fail(f"no such text file: {texts}")
        text_list = [p.strip() for p in texts.read_text().split("\n\n") if p.strip()]
    # No --measure: the registry's defaults; "all": every registered measure (AnalysisRequest expands it).
    # Repeatable: "-m trajectory -m trajectory_pca" is "-m trajectory,trajectory_pca".
    names = [m.strip() for value in measure or [] for m in value.split(",") if m.strip()]
    chosen = {} if measure is None else {"measures": names}
    request = AnalysisRequest(
        model=model,
        checkpoints=parse_checkpoints(checkpoints),
        **chosen,
        inputs=InputSpec(
            texts=text_list, n_prompts=n_prompts, seq_len=seq_len, seed=seed, prompt_style=prompt_style
        ),
        dtype=dtype,
    )
    # The id names the weights read too, as the service's does (phasescope.models.identity).
    resolved = resolve_request(request)
    steps = resolved.steps
    settings = get_settings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    bar = tqdm(total=len(steps), unit="ckpt", disable=quiet, desc=model)

    def progress(done: int, total: int, step: int) -> None:
        bar.set_postfix(step=step)
        bar.update(1)

    t0 = time.perf_counter()
    table, timings = run_local(
        model,
        steps,
        request.measures,
        request.inputs,
        request.params,
        pick_device(device),
        progress,
        dtype=request.dtype,
    )
    bar.close()
    aid = resolved.aid
    out = out or Path("phasescope-out") / aid
    digest = checkpoint_digest(table)
    from phasescope.phases.findings import find_transitions

    findings = find_transitions(table)
    write_local_result(out, aid, request, table, digest, timings, time.perf_counter() - t0, findings)
    typer.echo(digest.to_string(float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"\nfindings: {findings['summary']}")
    typer.echo(
        f"\n{len(table)} rows for {len(steps)} checkpoints in {time.perf_counter() - t0:.1f} s -> {out}"
    )


@app.command("api")
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the REST API (OpenAPI at /docs) and the dashboard (at /); starts the embedded Redis unless REDIS_URL is set."""
    import uvicorn

    create_combined_app = _program("api")
    uvicorn.run(create_combined_app(), host=host, port=port, log_level=log_level)


@app.command("up")
def up(
    demo: Annotated[
        bool, typer.Option(help="Train the zoo if missing and submit its standard analyses.")
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Worker processes (0: one per GPU, or one per CPU core up to 8).")
    ] = 0,
    port: Annotated[int, typer.Option(help="Port of the API and dashboard.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    redis_url: Annotated[str | None, typer.Option(help="Use this Redis instead of the embedded one.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default PHASESCOPE_DATA_DIR).")
    ] = None,
    open_browser: Annotated[
        bool, typer.Option(help="Open the dashboard in a browser when there is a display.")
    ] = True,
) -> None:
    """Run everything on this machine: Redis, workers, the API and the dashboard; Ctrl-C stops it all."""
    from phasescope.service.launcher import run_up, settings_with

    settings = settings_with(data_dir, redis_url)
    run_up(settings, workers, host, port, demo, open_browser, say=typer.echo)


@app.command("worker")
def worker(
    burst: Annotated[bool, typer.Option(help="Quit once the queue is empty.")] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: PHASESCOPE_TORCH_THREADS or all).")] = 0,
    gpu: Annotated[int | None, typer.Option(help="Run on this GPU only (sets CUDA_VISIBLE_DEVICES).")] = None,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host and pid).")] = None,
) -> None:
    """Run one RQ worker on the configured Redis (run one per GPU, each with --gpu N)."""
    import logging
    import os

    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker = _program("worker")
    run_worker(burst=burst, threads=threads, name=name)


@app.command("redis")
def redis_server(
    stop: Annotated[bool, typer.Option(help="Shut down a running embedded server instead.")] = False,
) -> None:
    """Run the embedded Redis (under the data directory) in the foreground until Ctrl-C."""
    import signal

    from phasescope.config import get_settings
    from phasescope.service.redis_conn import EmbeddedRedis

    settings = get_settings()
    if settings.redis_url:
        _fail(f"REDIS_URL is set ({settings.redis_url}): phasescope uses that server, not an embedded one")
    server = EmbeddedRedis(settings.redis_dir)
    if stop:
        if server.ping():
            server.stop()
            typer.echo(f"stopped the embedded Redis in {settings.redis_dir}")
        else:
            typer.echo("no embedded Redis is running")
        return
    if not server.start():
        _fail(f"an embedded Redis already answers at {server.url}")
    typer.echo(f"embedded Redis at {server.url} (data in {settings.redis_dir}); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("gc")
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    days: Annotated[
        float | None, typer.Option(min=0, help="Retention in days (default PHASESCOPE_RETENTION_DAYS).")
    ] = None,
) -> None:
    """Delete finished analyses older than the retention, stale and orphaned records, and unused cache files."""
    from phasescope.config import get_settings
    from phasescope.service.gc import collect, delete
    from phasescope.service.redis_conn import connect
    from phasescope.service.store import ResultStore

    settings = get_settings()
    if days is not None:
        settings = settings.model_copy(update={"retention_days": days})
    store = ResultStore(settings.store_dir)
    try:
        conn = connect(settings)
        conn.ping()
    except Exception as exc:  # without Redis only finished analyses and old folders are collected
        typer.secho(f"warning: Redis cannot be reached ({exc})", err=True)
        conn = None
    found = collect(store, conn, settings)
    for line in found.lines():
        typer.echo(f"{'would delete' if dry_run else 'deleting'} {line}")
    for line in found.notes():
        typer.echo(line)
    if dry_run:
        return
    typer.echo(f"deleted {delete(found, store, conn)} items (retention {settings.retention_days:g} days)")


# Seed ensembles: the command's body is its own module, so this one stays small.
app.command("ensemble")(ensemble_command)


def main() -> None:
    """Entry point that turns user mistakes into one line and exit code 2."""
    try:
        # Without standalone mode click returns an Exit's code (typer.Exit from _fail) instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PhasescopeError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        if exc.choices:
            typer.secho(f"valid choices: {', '.join(map(str, exc.choices[:20]))}", err=True)
        sys.exit(2)
    except ValidationError as exc:
        typer.secho(f"error: {_validation_message(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.secho("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
