"""The ``sedi`` command line. Heavy libraries are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import contextlib
import errno
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sedi.cli.serve import offline_defaults as _offline_defaults
from sedi.cli.serve import serve_teacher
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
app.command("serve-teacher")(serve_teacher)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set budget.max_calls=20 (repeatable)."),
]
DEFAULT_RUN_DIR = Path("runs/default")
# Exit codes (the README's table repeats them): a script can tell a finished run from one its budget stopped.
EXIT_ERROR, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_INTERRUPTED = 1, 2, 3, 130
EXIT_CODES = (
    "Exit codes: 0 finished (generation.target_kept, run.max_rounds or run.stop_when reached); 1 an unexpected "
    "error (a bug); 2 bad input, config, run directory, unwritable path or teacher error (one line, nothing spent "
    "on it); 3 stopped by the budget (raise the cap and rerun to continue); 130 interrupted (rerun to resume)."
)
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOSPC}


console = Console(stderr=True)


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on stderr, one per stage (generate, classify, instances, train, evaluate of each round)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bars = Progress(*columns, console=console, transient=False)
    tasks: dict[str, int] = {}

    def hook(stage: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()  # only once there is a bar: an empty display ends with a blank line before any error
        if stage not in tasks:
            tasks[stage] = int(bars.add_task(stage, total=total))
        bars.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

    try:
        yield hook
    finally:
        if tasks:
            bars.stop()


@app.command(epilog=EXIT_CODES)
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
    with _progress() as hook:
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
        loss, rouge = summary["heldout_loss"], summary["heldout_rouge_l"]
        console.print(
            f"student: {summary['train_steps']} steps"
            + (f", held-out loss {loss:.3f}" if loss is not None else "")
            + (f", held-out ROUGE-L {rouge:.3f}" if rouge is not None else "")
            + f"; seed pool {summary['seed_pool_size']} ({summary['promotions']} promoted, "
            f"{summary['demotions']} demoted)"
        )
    top = ", ".join(f"{rule} {n}" for rule, n in list(summary["rejected_by_rule"].items())[:6])
    if top:
        console.print(f"rejected by: {top}")
    console.print(f"data: {run_dir / 'data' / 'kept.jsonl'} (chat format: {run_dir / 'data' / 'train.jsonl'})")
    if outcome.state == "budget_exhausted":
        raise typer.Exit(EXIT_BUDGET)  # the data so far is written; a script can tell this from a finished run


@app.command()
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
    with _progress() as hook:
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


@app.command()
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
    with _progress() as hook:
        result = forecast(cfg, run_dir, str(config) if config else "defaults", pilot_calls, hook)
    typer.echo(json.dumps(result, sort_keys=True) if as_json else describe(result))


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory, a compare directory, or several runs.")],
    out: Annotated[Path | None, typer.Option("--out", help="Output directory; default: the first directory.")] = None,
) -> None:
    """Write DIR/report.html (self-contained, plots embedded) and a PNG of each plot under DIR/report/, and
    DIR/viewer.html, a self-contained page to read each kept and rejected candidate (one per arm for a comparison)."""
    from sedi.report.page import write_report
    from sedi.report.viewer import write_viewers

    dirs, labels, note = list(run_dirs), None, None
    if len(dirs) == 1 and (dirs[0] / "comparison.json").is_file():
        table = json.loads((dirs[0] / "comparison.json").read_text())
        # Before "arm_order", the order was the list "arms" (and the per-arm means were "methods"): both still read.
        arms = [arm for arm in table.get("arm_order", table.get("arms", table["runs"])) if table["runs"].get(arm)]
        repeat = int(table.get("repeat", 1))
        dirs = [Path(table["runs"][arm][0]["run_dir"]) for arm in arms]
        labels = arms if repeat == 1 else [f"{arm}, first seed" for arm in arms]
        if repeat > 1:
            note = f"Each column is the first of {repeat} seeds; {run_dirs[0] / 'comparison.md'} has every arm's "
            note += "mean and spread over all of them."
        out = out or run_dirs[0]
    path = write_report(dirs, out or dirs[0], labels, note)
    typer.echo(f"report: {path}")
    for viewer in write_viewers(dirs, out or dirs[0], labels):  # one per run: viewer.html, or viewer-<arm>.html
        typer.echo(f"viewer: {viewer}")


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the defaults.")] = None,
    set_: SetOption = None,
) -> None:
    """Print the effective config (defaults, then FILE, then --set) as YAML."""
    from sedi.config.model import dump_config, load_config

    typer.echo(dump_config(load_config(file, set_ or [])), nl=False)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write sedi.yaml and seeds.example.csv.")] = Path("."),
    teacher: Annotated[str, typer.Option(help="local (embedded), openai (a paid API) or vllm (own server).")] = "local",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing sedi.yaml (not a seed file).")] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="teacher.base_url; unset for openai, so $OPENAI_BASE_URL (else OpenAI's) is used."
        ),
    ] = None,
    seeds: Annotated[
        Path | None,
        typer.Option("--seeds", help="Your seed file (.csv or .jsonl): 10% (at least 5) become the held-out set."),
    ] = None,
) -> None:
    """Write DIR/sedi.yaml, every key with its help text and default, and seed tasks beside it: example ones, or
    with --seeds yours, split into DIR/seeds.jsonl and a held-out DIR/heldout.jsonl never used as seeds."""
    from sedi.cli.scaffold import write_start

    typer.echo("\n".join(write_start(directory, teacher, force=force, base_url=base_url, seeds=seeds)))


@app.command()
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


LicenseOption = Annotated[
    str | None,
    typer.Option("--license", help="Licence of the seed tasks of seeds.path (the embedded seeds are Apache-2.0)."),
]


@app.command("export")
def export_data(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    fmt: Annotated[
        str, typer.Option("--format", help="messages, prompt-completion (TRL's conversational), alpaca or sharegpt.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Data file: .jsonl, .json or .parquet; README.md goes beside.")],
    push_to_hub: Annotated[
        str | None, typer.Option("--push-to-hub", help="Also push data and card to this Hub dataset repo (HF_TOKEN).")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private.")] = False,
    license_: LicenseOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    select: Annotated[
        str,
        typer.Option(
            "--select",
            help="Which kept tasks: all, attractive (the tasks of attractive batches) or top-loss:N (the N the "
            "student found hardest).",
        ),
    ] = "all",
) -> None:
    """Write the run's kept tasks (one row per instance) in a fine-tuning format, with their provenance and
    training-signal columns and a dataset card. An existing file is replaced only with --force; the run's own
    data/ directory is refused."""
    from sedi.export.formats import export_dataset
    from sedi.export.hub import check_push
    from sedi.export.hub import push_to_hub as push
    from sedi.export.select import parse_selection

    selection = parse_selection(select)  # an unknown signal: one line, exit 2, before anything is read
    if push_to_hub is None:
        _offline_defaults()  # only a push talks to the Hub
    else:
        check_push()  # a missing token is refused before anything is written
    done = export_dataset(run_dir, fmt, out, license_, force=force, selection=selection)
    typer.echo(f"{done.rows} rows ({done.tasks} tasks) -> {done.data}\ndataset card -> {done.card}")
    if push_to_hub is not None:
        typer.echo(f"pushed -> {push(done, push_to_hub, private)}")


@app.command("export-model")
def export_model(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Path, typer.Option("--out", help="New or empty directory for the model and its card.")],
    round_index: Annotated[
        int | None, typer.Option("--round", min=0, help="The round's student; default: the latest trained.")
    ] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Merge the LoRA adapter into the base weights.")] = False,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Hub dataset repo the data was pushed to (the card links it).")
    ] = None,
    license_: LicenseOption = None,
) -> None:
    """Save the student (its adapter, or the base with it merged) loadable by AutoModelForCausalLM, with a card."""
    from sedi.export.model import export_model as save_model

    _offline_defaults()
    done = save_model(run_dir, out, round_index, merge=merge, dataset=dataset, license_=license_)
    typer.echo(f"round {done.round_index} student ({done.kind}, base {done.base}) -> {done.out}")
    typer.echo(f"files: {', '.join(done.files)}")


def main() -> None:
    from sedi.base.redact import guarded_streams, redact

    try:
        with guarded_streams():  # every console line, whoever prints it, goes through sedi.base.redact
            app()
    except SediError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:
        # A path the user named that cannot be written where no command says it better: one line with the path and
        # the reason, as every other mistake; any other OSError is a bug and keeps its traceback (below).
        if exc.filename is not None and exc.errno in _PATH_ERRNOS:
            print(
                f"error: {redact(str(exc.filename))}: {exc.strerror}: choose a path you can write to", file=sys.stderr
            )
            sys.exit(EXIT_BAD_INPUT)
        import traceback

        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except Exception:  # a bug: its traceback as Python prints it, but redacted (a provider may have echoed a key)
        import traceback

        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        sys.exit(1)
