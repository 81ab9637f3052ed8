"""Plain helpers shared by test modules: driving the CLI (as a subprocess or in-process), reading a run
directory's database, and writing an earlier run to resume. Shared fixtures live in ``tests/conftest.py``;
no test module imports another."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sedi.base.files import fsync_write
from sedi.config.model import SediConfig, dump_config
from sedi.store.db import RunStore
from tests.servers import Served

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module, to call its functions (tests never import scripts by name: see
    tests/test_layout.py); registered in ``sys.modules`` so that its dataclasses resolve their own module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CRASH_ENV = "SEDI_CRASH_AT"  # sedi's fault-injection point: set only through ``crash_at``


def sedi(
    *args: str,
    env: dict[str, str] | None = None,
    crash_at: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m sedi ARGS`` in a subprocess, output captured as text. ``env`` is added to this process's
    environment; ``crash_at`` makes the run kill itself with SIGKILL at that point (e.g. ``"train:1"``)."""
    full_env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
    full_env.update(env or {})
    if crash_at:
        full_env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "sedi", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def status(run_dir: Path) -> dict[str, Any]:
    """``sedi status RUN_DIR --json``, which must succeed."""
    result = sedi("status", str(run_dir), "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def rows(run_dir: Path, sql: str) -> list[Any]:
    """The rows of one query on the run's database."""
    db = sqlite3.connect(run_dir / "sedi.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def ledger(run_dir: Path) -> list[dict[str, Any]]:
    """Every row of the call ledger, in order, as dicts."""
    db = sqlite3.connect(run_dir / "sedi.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        db.close()


# One small, priced self-instruct round (2 task calls, then a classification and an instance call per task), as
# the export and secrets tests run it; extend it with more settings as a dict.
SMALL_PRICED_ROUND = {
    "method": "self-instruct",
    "generation.prompt_style": "self-instruct",
    "generation.calls_per_round": "2",
    "run.max_rounds": "1",
    "student.heldout_size": "0",
    "teacher.prices.prompt": "0.15",
    "teacher.prices.completion": "0.6",
}


def set_args(settings: dict[str, str]) -> list[str]:
    """``--set key=value`` arguments for every setting."""
    return [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]


def scripted_args(run_dir: Path, server: Served, student: Path, *extra: str) -> list[str]:
    """Loop runs against the scripted teacher; the student is the tiny model built in code (seconds to train)."""
    sets = {
        "student.model": str(student),
        "student.heldout_size": "8",
        "teacher.provider": "openai",
        "teacher.base_url": server.base_url,
        "teacher.model": "scripted-teacher",
        "generation.calls_per_round": "4",
        "run.max_rounds": "2",
    }
    args = ["run", "--run-dir", str(run_dir)] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return args + list(extra)


def invoke(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """``sedi ARGS`` in-process through the real entry point (sedi.cli.app.main); returns (exit code, stderr)."""
    from sedi.cli.app import main

    monkeypatch.setattr(sys, "argv", ["sedi", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.err + out.out


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes (folders: 'dir')."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def record_run(run_dir: Path, config: SediConfig) -> None:
    """What an earlier run leaves: its recorded config, a planned request, a state, its files."""
    with RunStore(run_dir) as store:
        body = dump_config(config)
        store.record_config(config.digest(), body)
        store.db.execute(
            "INSERT INTO requests (request_key, round, kind, sample_index, context) VALUES ('k0', 0, 'tasks', 0, '[]')"
        )
        store.set_state("budget_exhausted")
    fsync_write(run_dir / "config.yaml", body)
    (run_dir / "data").mkdir()
    (run_dir / "data" / "kept.jsonl").write_text('{"instruction": "paid for"}\n')
