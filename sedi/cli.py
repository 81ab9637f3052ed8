"""The ``sedi`` command line. Heavy libraries are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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
    # Our own progress bars say what is going on; the libraries' per-call bars would bury them.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


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


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the embedded defaults.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Directory this run owns; rerun to resume.")] = (
        DEFAULT_RUN_DIR
    ),
    set_: SetOption = None,
) -> None:
    """Run (or resume) the loop on a config; a rerun never pays twice for a response."""
    from sedi.config import load_config
    from sedi.loop import run as run_loop
    from sedi.summary import read_summary

    _offline_defaults()
    cfg = load_config(config, set_ or [])
    source = str(config) if config else "defaults"
    header = f"run dir: {run_dir}  method: {cfg.method}  teacher: {cfg.teacher.provider}/{cfg.teacher.model}"
    with _progress() as hook:
        outcome = run_loop(cfg, run_dir, source, hook, on_start=lambda: console.print(header))
    summary = read_summary(run_dir)
    console.print(f"[bold]{outcome.state}[/bold]: {outcome.message}")
    cost = "unknown (no teacher.prices)" if summary["cost_usd"] is None else f"${summary['cost_usd']:.4f}"
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


@app.command()
def compare(
    config: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the embedded defaults.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Directory for every arm's runs and the table.")] = Path(
        "runs/compare"
    ),
    stop_at: Annotated[
        str,
        typer.Option("--stop-at", help="'kept': each arm stops at generation.target_kept; 'budget': at the budget."),
    ] = "kept",
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Seeds to run (mean, spread and bootstrap intervals).")
    ] = 1,
    published: Annotated[
        bool,
        typer.Option(
            "--published-baseline",
            help="Also run Self-Instruct as published (instruction-only prompts, then classification and "
            "instance calls per task) as a fourth column.",
        ),
    ] = False,
    set_: SetOption = None,
) -> None:
    """Run Self-Instruct, SeDi as the paper states it and SeDi with steered prompts on the same teacher, seeds,
    student and budget; write a table with intervals."""
    _offline_defaults()
    from sedi.compare import compare as run_compare
    from sedi.config import load_config
    from sedi.exceptions import ConfigError

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
            on_run=lambda method, path: console.print(f"[bold]{method}[/bold] in {path}"),
            published=published,
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
    """Forecast the calls, tokens, cost and wall time to reach generation.target_kept, with 95% intervals."""
    from sedi.config import load_config
    from sedi.estimate import describe
    from sedi.estimate import estimate as forecast

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
    """Write DIR/report.html (self-contained, plots embedded) and a PNG of each plot under DIR/report/."""
    from sedi.report import write_report

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


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the defaults.")] = None,
    set_: SetOption = None,
) -> None:
    """Print the effective config (defaults, then FILE, then --set) as YAML."""
    from sedi.config import dump_config, load_config

    typer.echo(dump_config(load_config(file, set_ or [])), nl=False)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write sedi.yaml and seeds.example.csv.")] = Path("."),
    teacher: Annotated[str, typer.Option(help="local (embedded), openai (a paid API) or vllm (own server).")] = "local",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing sedi.yaml (not a seed file).")] = False,
) -> None:
    """Write DIR/sedi.yaml, every key with its help text and default, and example seed tasks beside it."""
    from sedi.scaffold import write_start

    typer.echo("\n".join(write_start(directory, teacher, force=force)))


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")] = DEFAULT_RUN_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of a run: calls, cache hits, tokens, cost, kept tasks, state."""
    from sedi.summary import read_summary

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
) -> None:
    """Write the run's kept tasks (one row per instance) in a fine-tuning format, with a dataset card."""
    from sedi.export_formats import export_dataset
    from sedi.export_hub import check_push
    from sedi.export_hub import push_to_hub as push

    if push_to_hub is None:
        _offline_defaults()  # only a push talks to the Hub
    else:
        check_push()  # a missing token is refused before anything is written
    done = export_dataset(run_dir, fmt, out, license_)
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
    from sedi.export_model import export_model as save_model

    _offline_defaults()
    done = save_model(run_dir, out, round_index, merge=merge, dataset=dataset, license_=license_)
    typer.echo(f"round {done.round_index} student ({done.kind}, base {done.base}) -> {done.out}")
    typer.echo(f"files: {', '.join(done.files)}")


@app.command("serve-teacher")
def serve_teacher(
    model: Annotated[str, typer.Option(help="'gemma-3-270m' (bundled) or a transformers model directory.")] = (
        "gemma-3-270m"
    ),
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    model_id: Annotated[str | None, typer.Option(help="Model name the API reports; default from --model.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (bf16 where the device computes it natively, else float32), float32, bfloat16.")
    ] = "auto",
    parent_pid: Annotated[int | None, typer.Option(help="Exit when this process ends.")] = None,
    max_tokens: Annotated[
        int, typer.Option(min=1, help="Refuse requests asking for more completion tokens (HTTP 400).")
    ] = 4096,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests decoded together (continuous batching).")] = 8,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body (HTTP 413 beyond).")] = 1 << 20,
) -> None:
    """Serve a local model over the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions)."""
    from typing import cast, get_args

    from sedi.serve import serve
    from sedi.serve._engine import TeacherDtype  # torch is loaded by serve() right after anyway

    _offline_defaults()
    if dtype not in get_args(TeacherDtype):
        raise typer.BadParameter(f"--dtype {dtype!r}: use auto, float32 or bfloat16")
    weights = cast(TeacherDtype, dtype)
    serve(
        model,
        host=host,
        port=port,
        model_id=model_id,
        device=device,
        dtype=weights,
        parent_pid=parent_pid,
        max_tokens=max_tokens,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
    )


def main() -> None:
    try:
        app()
    except SediError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
