"""sedi's embedded local teacher: one transformers model behind an OpenAI-compatible HTTP API.

``sedi run`` starts it in a subprocess when the teacher is local, and talks to it with the official
``openai`` client exactly as it would talk to a hosted API. Endpoints: ``GET /v1/models``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (the latter only for models with a chat
template; the bundled Gemma-3-270m base has none).

Importing this package is cheap on purpose (the CLI imports it for ``--help``): torch, transformers and
FastAPI are imported only when a model is loaded or an app is built.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from sedi.serve._bundled import BUNDLED_MODEL_NAME, bundled_model_dir, cache_dir

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sedi.serve._engine import Engine, GenerationResult, TeacherDtype

DEFAULT_MAX_TOKENS_CAP = 4096
"""Default ``max_tokens`` cap of :func:`serve`: ten times the run's own 384, and about two minutes of
decoding on two CPU cores; a bigger ask is a mistake or abuse that would hold a batch row for hours."""

__all__ = [
    "BUNDLED_MODEL_NAME",
    "Engine",
    "GenerationResult",
    "bundled_model_dir",
    "cache_dir",
    "create_app",
    "serve",
]


def __getattr__(name: str) -> Any:
    # PEP 562: ``from sedi.serve import Engine`` works but pays for torch only when actually used.
    if name in ("Engine", "GenerationResult"):
        from sedi.serve import _engine

        return getattr(_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_app(engine: Engine, **limits: Any) -> FastAPI:
    """The FastAPI app serving ``engine``; ``limits``: ``max_tokens``, ``max_body_bytes``, ``memo_size``,
    ``generation_threads`` (see :func:`sedi.serve._app.create_app`)."""
    from sedi.serve._app import create_app as build

    return build(engine, **limits)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is just not ours
        return True
    # A killed child that its parent has not reaped yet still answers kill(0): check for a zombie.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _exit_when_gone(parent_pid: int, interval: float = 1.0) -> None:
    """Exit this process (status 0) once ``parent_pid`` is gone, checking every ``interval`` seconds."""
    # If parent_pid is our real parent, being re-parented proves its death even if its pid is reused.
    watch_ppid = os.getppid() == parent_pid
    while True:
        time.sleep(interval)
        if (watch_ppid and os.getppid() != parent_pid) or not _process_alive(parent_pid):
            logging.getLogger("sedi.serve").warning("parent process %d is gone; stopping the server", parent_pid)
            os._exit(0)  # not sys.exit: that would only end this thread, and uvicorn may be mid-request


def serve(
    model: str = BUNDLED_MODEL_NAME,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_id: str | None = None,
    parent_pid: int | None = None,
    log_level: str = "info",
    device: str = "auto",
    dtype: TeacherDtype = "auto",
    max_tokens: int | None = DEFAULT_MAX_TOKENS_CAP,
    max_batch: int = 8,
    max_body_bytes: int = 1 << 20,
) -> None:
    """Load ``model`` (``"gemma-3-270m"`` or a local transformers directory) and serve it until killed.

    With ``parent_pid``, the server exits by itself once that process is gone, so that a killed
    ``sedi run`` never leaves an orphan server holding the port and the model's memory. The watch
    starts before the model loads, since loading (or the first conversion) can take a minute.
    ``device`` is ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or a torch device like ``"cuda:1"``;
    ``dtype`` is ``"auto"`` (bf16 where the device computes it natively, else float32), ``"float32"`` or
    ``"bfloat16"``. ``max_tokens`` caps a request's completion tokens (larger asks get 400; None: only
    the context length caps them); ``max_batch`` bounds how many requests decode together;
    ``max_body_bytes`` caps request bodies (413).
    """
    # Set before torch loads OpenMP (no effect if it already has): idle OpenMP threads sleep instead of
    # spinning. Spinning threads stall every parallel region as soon as another process is busy, such
    # as the run's own embedding step: measured 1.3 vs 8 to 10 tokens/s for Gemma-3-270m with one of
    # two cores taken. An explicit OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if parent_pid is not None:
        threading.Thread(target=_exit_when_gone, args=(parent_pid,), name="sedi-parent-watch", daemon=True).start()
    # uvicorn's "trace" has no logging constant; it is below DEBUG anyway.
    level = logging.getLevelName(log_level.upper())  # an int for known names, a string otherwise
    if not isinstance(level, int):
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")

    import uvicorn

    from sedi.serve._app import DEFAULT_GENERATION_THREADS
    from sedi.serve._app import create_app as build
    from sedi.serve._engine import Engine

    engine = Engine.load(model, model_id=model_id, device=device, dtype=dtype, max_batch=max_batch)
    # A full batch decoding and as many requests queued for its places, so that a row that ends is refilled at the
    # next step rather than after a thread frees up; never fewer than before the pool was sized.
    threads = max(DEFAULT_GENERATION_THREADS, 2 * max_batch)
    app = build(engine, max_tokens=max_tokens, max_body_bytes=max_body_bytes, generation_threads=threads)
    logging.getLogger("sedi.serve").info(
        "%s on %s (%s): up to %d requests decode together",
        engine.model_id,
        engine.device,
        engine.model.dtype,
        max_batch,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
