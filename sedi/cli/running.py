"""The commands that run the loop and count a run: ``sedi run``, ``sedi compare``, ``sedi estimate`` and
``sedi status`` (registered on the typer app by :mod:`sedi.cli.app`). Heavy libraries are imported inside the
commands so ``--help`` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sedi.cli.serve import offline_defaults as _offline_defaults
from sedi.cli.shared import DEFAULT_RUN_DIR, EXIT_BUDGET, SetOption, console, progress


def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the embedded defaults.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Directory this run owns; rerun to resume.")] = (
        DEFAULT_RUN_DIR
    ),
    set_: SetOption = None,
) -> None:
    """Run (or resume) the loop on a config; a rerun never pays twice for a response."""
    from sedi.config.model import load_config
    from sedi.loop import run as run_loop
    from sedi.report.summary import read_summary

    _offline_defaults()
    cfg = load_config(config, set_ or [])
    source = str(config) if config else "defaults"
    header = f"run dir: {run_dir}  method: {cfg.method}  teacher: {cfg.teacher.provider}/{cfg.teacher.model}"
    if cfg.seeds.path and not cfg.seeds.heldout_path and cfg.student.heldout_size:
        # Your seeds, general held-out tasks: say so, since the held-out numbers then measure something else.
        header += (
            f"\nheld-out: the first {min(cfg.student.heldout_size, 252)} of the 252 general tasks shipped with sedi, "
            "not yours (seeds.heldout_path is unset; `sedi init --seeds FILE` splits a held-out file from your seeds)"
        )
    with progress() as hook:
        outcome = run_loop(cfg, run_dir, source, hook, on_start=lambda: console.print(header))
    summary = read_summary(run_dir)
    console.print(f"[bold]{outcome.state}[/bold]: {outcome.message}")
    from sedi.store.ledger import cost_text

    cost = cost_text(summary)  # "at most $X" when usage went unreported: never $0 for what was charged
    console.print(
        f"calls {summary['calls']} (cache hits {summary['cache_hits']}), tokens {summary['prompt_tokens']} prompt + "
        f"{summary['completion_tokens']} completion, cost {cost}"
    )
    rate = summary["keep_rate"]
    per_kept = summary["calls_per_kept"]
    console.print(
        f"candidates {summary['candidates']}, kept {summary['kept']}"
        + (f" (keep rate {rate:.0%}, {per_kept:.2f} calls per kept task)" if rate is not None and per_kept else "")
    )
    if summary["train_steps"]:
        console.print(student_line(summary))
    top = ", ".join(f"{rule} {n}" for rule, n in list(summary["rejected_by_rule"].items())[:6])
    if top:
        console.print(f"rejected by: {top}")
    console.print(f"data: {run_dir / 'data' / 'kept.jsonl'} (chat format: {run_dir / 'data' / 'train.jsonl'})")
    if outcome.state == "budget_exhausted":
        raise typer.Exit(EXIT_BUDGET)  # the data so far is written; a script can tell this from a finished run


def student_line(summary: dict[str, Any]) -> str:
    """The run summary's line on the student, from ``read_summary``'s fields."""
    steps, loss, rouge = summary["train_steps"], summary["heldout_loss"], summary["heldout_rouge_l"]
    return (
        f"student: {steps} step{'' if steps == 1 else 's'}"
        + (f", held-out loss {loss:.3f}" if loss is not None else "")
        + (f", held-out ROUGE-L {rouge:.3f}" if rouge is not None else "")
        + f"; seed pool {summary['seed_pool_size']} ({summary['promotions']} promoted, {summary['demotions']} demoted)"
    )


def compare(
    config: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the embedded defaults.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Directory for every arm's runs and the table.")] = Path(
        "runs/compare"
    ),
    arms: Annotated[
        str,
        typer.Option(
            "--arms",
            help="Comma-separated arms of experiment.arms (an unknown name lists them all), the first the baseline; "
            "'default' is exactly what `sedi run` does with this config.",
        ),
    ] = "self-instruct,default",
    stop_at: Annotated[
        str,
        typer.Option("--stop-at", help="'kept': each arm stops at generation.target_kept; 'budget': at the budget."),
    ] = "kept",
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Seeds to run (mean, spread and bootstrap intervals).")
    ] = 1,
    published: Annotated[
        bool,
        typer.Option("--published-baseline", help="Also run the arm self-instruct-published (as --arms ...,that)."),
    ] = False,
    parallel: Annotated[
        bool,
        typer.Option("--parallel", help="Run every arm and seed at once against one shared embedded teacher."),
    ] = False,
    set_: SetOption = None,
) -> None:
    """Run named arms (default: the Self-Instruct baseline and `sedi run` as shipped) on the same teacher, seeds,
    student and budget; write a table with each arm's calls per kept task over the baseline's, with intervals."""
    _offline_defaults()
    from sedi.config.model import load_config
    from sedi.exceptions import ConfigError
    from sedi.experiment.arms import parse_arms
    from sedi.experiment.comparison import compare as run_compare

    names = parse_arms(arms)
    if published and "self-instruct-published" not in names:
        names.append("self-instruct-published")
    if stop_at not in ("kept", "budget"):
        raise ConfigError(f"--stop-at {stop_at!r}: use 'kept' or 'budget'")
    cfg = load_config(config, set_ or [])
    source = str(config) if config is not None else "defaults"
    with progress() as hook:
        run_compare(
            cfg,
            run_dir,
            source,
            "kept" if stop_at == "kept" else "budget",
            repeat,
            hook,
            on_run=lambda arm, path: console.print(f"[bold]{arm}[/bold] in {path}"),
            arms=names,
            parallel=parallel,
        )
    console.print((run_dir / "comparison.md").read_text())
    console.print(f"table: {run_dir / 'comparison.md'} and {run_dir / 'comparison.json'}")


def estimate(
    config: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the embedded defaults.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="The run to forecast (and pilot in).")] = DEFAULT_RUN_DIR,
    pilot_calls: Annotated[
        int, typer.Option("--pilot-calls", min=0, help="First spend N real calls there (a later run reuses them).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    set_: SetOption = None,
) -> None:
    """Forecast the calls, tokens, cost and wall time of the run as configured (it ends at generation.target_kept,
    run.max_rounds or a budget cap, whichever comes first) and to reach the target, with 95% intervals."""
    from sedi.cli.estimate import describe
    from sedi.cli.estimate import estimate as forecast
    from sedi.config.model import load_config

    _offline_defaults()
    cfg = load_config(config, set_ or [])
    with progress() as hook:
        result = forecast(cfg, run_dir, str(config) if config else "defaults", pilot_calls, hook)
    typer.echo(json.dumps(result, sort_keys=True) if as_json else describe(result))


def status(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")] = DEFAULT_RUN_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of a run: calls, cache hits, tokens, cost, kept tasks, state."""
    from sedi.report.summary import read_summary

    summary = read_summary(run_dir)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        typer.echo(f"{key:>24}: {value}")
