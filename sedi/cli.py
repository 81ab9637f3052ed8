"""The ``sedi`` command line. Heavy libraries are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sedi.exceptions import SediError

app = typer.Typer(
    name="sedi",
    help="Turn a few seed tasks into a diverse instruction-tuning dataset with as few teacher calls as possible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set budget.max_calls=20 (repeatable)."),
]
DEFAULT_RUN_DIR = Path("runs/default")


def _offline_defaults() -> None:
    # Nothing in a run may try a model hub: every model comes from a package or a local directory.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the embedded defaults.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Directory this run owns; rerun to resume.")] = (
        DEFAULT_RUN_DIR
    ),
    set_: SetOption = None,
) -> None:
    """Run (or resume) generation on a config; a rerun never pays twice for a response."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sedi.config import load_config
    from sedi.loop import run as run_loop
    from sedi.store import read_summary

    _offline_defaults()
    cfg = load_config(config, set_ or [])
    source = str(config) if config else "defaults"
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, int] = {}

        def hook(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = int(bars.add_task(stage, total=total))
            bars.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        header = f"run dir: {run_dir}  method: {cfg.method}  teacher: {cfg.teacher.provider}/{cfg.teacher.model}"
        outcome = run_loop(cfg, run_dir, source, hook, on_start=lambda: console.print(header))
    summary = read_summary(run_dir)
    console.print(f"[bold]{outcome.state}[/bold]: {outcome.message}")
    console.print(
        f"calls {summary['calls']} (cache hits {summary['cache_hits']}), tokens {summary['prompt_tokens']} prompt + "
        f"{summary['completion_tokens']} completion, cost ${summary['cost_usd']:.4f}"
    )
    rate = summary["keep_rate"]
    per_kept = summary["calls_per_kept"]
    console.print(
        f"candidates {summary['candidates']}, kept {summary['kept']}"
        + (f" (keep rate {rate:.0%}, {per_kept:.2f} calls per kept task)" if rate is not None and per_kept else "")
    )
    top = ", ".join(f"{rule} {n}" for rule, n in list(summary["rejected_by_rule"].items())[:6])
    if top:
        console.print(f"rejected by: {top}")
    console.print(f"data: {run_dir / 'data' / 'kept.jsonl'} (chat format: {run_dir / 'data' / 'train.jsonl'})")


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the defaults.")] = None,
    set_: SetOption = None,
) -> None:
    """Print the effective config (defaults, then FILE, then --set) as YAML."""
    from sedi.config import dump_config, load_config

    typer.echo(dump_config(load_config(file, set_ or [])), nl=False)


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")] = DEFAULT_RUN_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of a run: calls, cache hits, tokens, cost, kept tasks, state."""
    from sedi.store import read_summary

    summary = read_summary(run_dir)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        typer.echo(f"{key:>24}: {value}")


@app.command("serve-teacher")
def serve_teacher(
    model: Annotated[str, typer.Option(help="'gemma-3-270m' (bundled) or a transformers model directory.")] = (
        "gemma-3-270m"
    ),
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    model_id: Annotated[str | None, typer.Option(help="Model name the API reports; default from --model.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    parent_pid: Annotated[int | None, typer.Option(help="Exit when this process ends.")] = None,
) -> None:
    """Serve a local model over the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions)."""
    from sedi.serve import serve

    _offline_defaults()
    serve(model, host=host, port=port, model_id=model_id, device=device, parent_pid=parent_pid)


def main() -> None:
    try:
        app()
    except SediError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
