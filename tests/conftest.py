"""Shared fixtures. Nothing in the test suite may reach a model hub: every model is built or bundled."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Served, serve_app
from tests.tiny_model import build_tiny_model

# Before any test module imports transformers (nothing above does).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# --- Test tiers: `pytest -m "not slow"` is the fast tier, `pytest -m slow` the rest (.ci/run runs both) -----------

# Fixtures that load the bundled Gemma-3-270m (seconds to load, tens of seconds per generated batch on 2 cores):
# every test that uses one, directly or through another fixture, is marked slow here, so no test has to remember.
SLOW_FIXTURES = frozenset({"gemma_engine"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- Local teacher server (sedi.serve) -------------------------------------------------------------


@contextlib.contextmanager
def _serve(engine: Any) -> Iterator[Served]:
    from sedi.serve import create_app

    with serve_app(create_app(engine)) as served:
        yield served


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a chat template (see tests/tiny_model.py), built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-chat")


@pytest.fixture(scope="session")
def tiny_model_dir_no_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model without a chat template (like a base model)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-base", chat_template=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Any:
    from sedi.serve import Engine

    return Engine.load(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_server(tiny_engine: Any) -> Iterator[Served]:
    """The tiny chat model served for the whole session; its request_counts accumulate across tests."""
    with _serve(tiny_engine) as running:
        yield running


@pytest.fixture(scope="session")
def gemma_engine() -> Any:
    """The bundled Gemma-3-270m base model (converted once into the model cache, then loaded in seconds)."""
    from sedi.serve import BUNDLED_MODEL_NAME, Engine

    return Engine.load(BUNDLED_MODEL_NAME)


@pytest.fixture
def serve_engine() -> Iterator[Callable[[Any], Served]]:
    """Factory: ``serve_engine(engine)`` serves any Engine until the end of the test."""
    with contextlib.ExitStack() as stack:
        yield lambda engine: stack.enter_context(_serve(engine))


@pytest.fixture
def scripted(serve_engine: Callable[[Any], Served]) -> Served:
    """The scripted teacher (tests/scripted_teacher.py) served until the end of the test, fresh per test so its
    request counts belong to that test; ``tests.helpers.scripted_args`` points a run at it."""
    from tests.scripted_teacher import ScriptedEngine

    return serve_engine(ScriptedEngine())
