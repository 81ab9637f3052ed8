"""The commands that turn a run into something to use or read: ``sedi report``, ``sedi export`` and
``sedi export-model`` (registered on the typer app by :mod:`sedi.cli.app`). Heavy libraries are imported inside
the commands so ``--help`` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sedi.cli.serve import offline_defaults as _offline_defaults


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


LicenseOption = Annotated[
    str | None,
    typer.Option("--license", help="Licence of the seed tasks of seeds.path (the embedded seeds are Apache-2.0)."),
]


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
