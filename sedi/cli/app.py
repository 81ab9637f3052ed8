"""The ``sedi`` command line: the typer ``app`` with every command registered in one place (below, in the order
``sedi --help`` lists them), ``sedi config show`` and ``sedi init``, and :func:`main`, the console entry point,
the one place that turns a user's mistake into one line and exit code 2.

The commands live by what they do: :mod:`sedi.cli.running` (``run``, ``compare``, ``estimate``, ``status``),
:mod:`sedi.cli.results` (``report``, ``export``, ``export-model``) and :mod:`sedi.cli.serve` (``serve-teacher``);
what they share is in :mod:`sedi.cli.shared`. Heavy libraries are imported inside commands so ``--help`` stays
fast."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Annotated

import typer

from sedi.cli.results import export_data, export_model, report
from sedi.cli.running import compare, estimate, run, status
from sedi.cli.serve import serve_teacher
from sedi.cli.shared import EXIT_BAD_INPUT, EXIT_CODES, EXIT_ERROR, EXIT_INTERRUPTED, SetOption
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
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOSPC}


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="YAML config file; omitted: the defaults.")] = None,
    set_: SetOption = None,
) -> None:
    """Print the effective config (defaults, then FILE, then --set) as YAML."""
    from sedi.config.model import dump_config, load_config

    typer.echo(dump_config(load_config(file, set_ or [])), nl=False)


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


# Every command, in the order `sedi --help` lists them (typer lists the `config` group after the commands).
app.command("serve-teacher")(serve_teacher)
app.command(epilog=EXIT_CODES)(run)
app.command()(compare)
app.command()(estimate)
app.command()(report)
app.command()(init)
app.command()(status)
app.command("export")(export_data)
app.command("export-model")(export_model)


_INTERRUPTED = "interrupted: rerun the same command to resume"


def main() -> None:
    from sedi.base.redact import guarded_streams, redact

    try:
        with guarded_streams():  # every console line, whoever prints it, goes through sedi.base.redact
            app()
    except SediError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(_INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:  # typer turns a Ctrl-C inside a command into exit 130, silently
            print(_INTERRUPTED, file=sys.stderr)
        raise
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
