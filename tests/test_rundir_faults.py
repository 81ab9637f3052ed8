"""A run directory that is broken, read-only, on a full disk, or left behind by a killed process: one-line
errors instead of tracebacks, nothing committed is lost, and readers (status, report) change nothing."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sedi.store.rundir
from sedi.config.model import load_config
from sedi.exceptions import RunDirError
from sedi.report.summary import read_summary
from sedi.store.candidates import add_candidates
from sedi.store.db import RunStore
from sedi.store.rundir import run_dir_errors
from tests.helpers import invoke, record_run, snapshot


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A cleanly closed earlier run with the default config."""
    path = tmp_path / "run"
    record_run(path, load_config())
    return path


def _quick_check(run_dir: Path) -> str:
    db = sqlite3.connect(run_dir / "sedi.db")
    try:
        return str(db.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize(
    "damage",
    [lambda db: db.write_bytes(b"\x00garbage" * 600), lambda db: db.write_bytes(db.read_bytes()[:8192])],
    ids=["corrupt", "truncated"],
)
def test_status_of_a_broken_database_is_one_line(
    run_dir: Path, damage: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    damage(run_dir / "sedi.db")  # type: ignore[operator]
    code, output = invoke(["status", str(run_dir), "--json"], capsys, monkeypatch)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "sedi.db: the run database is unreadable" in lines[0], output


def test_an_empty_database_beside_run_files_is_not_a_new_run(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "sedi.db").write_bytes(b"")
    with pytest.raises(RunDirError, match=r"sedi.db: is empty but the run directory holds run files \(config.yaml"):
        RunStore(run_dir)
    assert (run_dir / "sedi.db").stat().st_size == 0  # not initialised as a fresh run (budget reset)
    with pytest.raises(RunDirError, match=r"sedi\.db empty"):
        read_summary(run_dir)
    alone = tmp_path / "fresh"
    alone.mkdir()
    (alone / "sedi.db").write_bytes(b"")  # nothing else here: an ordinary new run
    RunStore(alone).close()


def test_status_changes_nothing_in_the_run_directory(run_dir: Path) -> None:
    before = snapshot(run_dir)
    assert read_summary(run_dir)["state"] == "budget_exhausted"
    assert snapshot(run_dir) == before  # mode=ro alone would have left sedi.db-wal and sedi.db-shm behind


@pytest.fixture
def read_only_copy(run_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy no process can write to, root included: the immutable attribute (chattr +i) on every entry."""
    copy = tmp_path / "ro"
    shutil.copytree(run_dir, copy)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "-R", "+i", str(copy)]).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        probe = copy / "probe"
        with pytest.raises(OSError):
            probe.write_text("x")
        yield copy
    finally:
        subprocess.run(["chattr", "-R", "-i", str(copy)], check=True)


def test_status_works_on_a_read_only_copy_and_run_refuses_it(
    read_only_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(read_only_copy)
    code, output = invoke(["status", str(read_only_copy), "--json"], capsys, monkeypatch)
    assert code == 0 and '"state": "budget_exhausted"' in output, output
    code, output = invoke(["run", "--run-dir", str(read_only_copy)], capsys, monkeypatch)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "the run directory is read-only" in lines[0], output
    assert snapshot(read_only_copy) == before


def test_report_works_on_a_read_only_copy(read_only_copy: Path, tmp_path: Path) -> None:
    from sedi.report.page import write_report

    write_report([read_only_copy], tmp_path / "out")
    assert (tmp_path / "out" / "report.html").is_file()


def test_readers_fall_back_to_immutable_where_mode_ro_cannot_open(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A killed writer's WAL: committed data not yet in the main file. mode=ro reads it...
    writer = sqlite3.connect(run_dir / "sedi.db", isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE meta SET value = 'finished' WHERE key = 'state'")
        assert (run_dir / "sedi.db-wal").stat().st_size > 0
        assert read_summary(run_dir)["state"] == "finished"
        # ...and where it cannot open (a read-only directory without the -shm file: simulated, since root
        # may create files anywhere), the main file is read as it is rather than failing.
        real_connect = sqlite3.connect

        def no_mode_ro(target: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if "mode=ro" in str(target):
                raise sqlite3.OperationalError("unable to open database file")
            return real_connect(target, *args, **kwargs)

        monkeypatch.setattr(sedi.store.rundir.sqlite3, "connect", no_mode_ro)
        assert read_summary(run_dir)["state"] == "budget_exhausted"
    finally:
        writer.close()


@pytest.mark.slow
def test_status_says_interrupted_after_kill_9(run_dir: Path) -> None:
    code = (
        "import os, signal, sys; from pathlib import Path; from sedi.store.db import RunStore; "
        "s = RunStore(Path(sys.argv[1])); s.set_state('running'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, timeout=60)
    assert killed.returncode == -9
    assert read_summary(run_dir)["state"] == "interrupted"  # the state says running, but nobody owns the lock
    with RunStore(run_dir):  # a process that owns the directory is running indeed
        assert read_summary(run_dir)["state"] == "running"


def test_a_full_disk_while_writing_is_one_line_and_keeps_the_run(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_before = (run_dir / "config.yaml").read_bytes()

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("sedi.loop.fsync_write", full)
    code, output = invoke(["run", "--run-dir", str(run_dir)], capsys, monkeypatch)
    lines = output.strip().splitlines()
    assert code == 2, output
    # The run had started (its header line is out); the failure itself is one line, no traceback.
    assert lines[-1].startswith("error: ") and "config.yaml: disk full" in lines[-1], output
    assert "Traceback" not in output and sum(line.startswith("error") for line in lines) == 1, output
    assert (run_dir / "config.yaml").read_bytes() == config_before
    assert _quick_check(run_dir) == "ok" and read_summary(run_dir)["state"] == "budget_exhausted"


def test_sqlite_full_is_one_error_and_rolls_back(run_dir: Path) -> None:
    with (
        pytest.raises(RunDirError, match=r"sedi.db: disk full: free space"),
        run_dir_errors(run_dir),
        RunStore(run_dir) as store,
    ):
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: a full disk
        store.record_config("other", "x" * 200_000)
    assert _quick_check(run_dir) == "ok"
    with RunStore(run_dir) as store:
        assert store.db.execute("SELECT COUNT(*) FROM configs").fetchone()[0] == 1  # the failed write left nothing


def test_a_candidate_id_taken_by_other_content_is_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    items = [(0, "Write a haiku about rain.", "", "Rain falls."), (1, "Name a colour.", "", "Blue.")]
    with RunStore(tmp_path / "run") as store:
        rows = [(pos, ins, inp, out, None) for pos, ins, inp, out in items]
        add_candidates(store, "key-a", 6, 1, rows)
        add_candidates(store, "key-a", 6, 1, rows)  # a resumed round re-parsing its cached response: no-op
        assert store.db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 2
        # calls_per_round 4 -> 2 gives round 3 slot 0 the sample index 6 of round 1 slot 2: another response
        with pytest.raises(RunDirError, match=r"candidate 6000 .* already stored with different content"):
            add_candidates(store, "key-b", 6, 3, [(0, "Translate hello.", "", "Hola.", None)])
        with pytest.raises(RunDirError, match="already stored with different content"):
            add_candidates(store, "key-a", 6, 1, [(0, "Write a haiku about snow.", "", "Snow.", None)])
        stored = store.db.execute("SELECT id, request_key, instruction FROM candidates ORDER BY id").fetchall()
        assert [tuple(r) for r in stored] == [
            (6000, "key-a", "Write a haiku about rain."),
            (6001, "key-a", "Name a colour."),
        ]
