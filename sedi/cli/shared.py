"""What the commands of :mod:`sedi.cli.app` share: the ``--set`` option, the default run directory, the exit
codes, the stderr console and its progress bars. Imports nothing of sedi, so every command module can."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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


console = Console(stderr=True)


@contextlib.contextmanager
def progress() -> Iterator[Callable[[str, int, int], None]]:
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
