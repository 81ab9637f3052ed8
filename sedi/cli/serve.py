"""``sedi serve-teacher``, and the environment every command that loads models sets first; apart from
:mod:`sedi.cli.app` (which registers the command) to keep each module small. Imports nothing of sedi at load."""

from __future__ import annotations

import os
from typing import Annotated

import typer


def offline_defaults() -> None:
    from sedi.base.hardware import go_offline

    go_offline()  # nothing in a run may try a model hub: every model comes from a package or a local directory
    # Our own progress bars say what is going on; the libraries' per-call bars would bury them.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


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

    offline_defaults()
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
