"""The run directory as a thing that can be broken: read it without changing it, check it before a run
touches it, and turn the faults of the disk under it into one-line errors.

``sedi status``, ``sedi report`` and the checks before a run only *read*: they must work on a read-only
copy and must not leave files behind. SQLite's ``mode=ro`` is not enough for that: on a WAL database it
creates ``-wal``/``-shm`` files (and fails where it cannot). So a reader picks ``immutable=1`` whenever all
committed data is in the main file and nobody writes (no WAL content, lock free), and ``mode=ro`` otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from sedi.exceptions import RunDirError

T = TypeVar("T")

DB_NAME = "sedi.db"  # the run database, inside the run directory (RunStore.DB_NAME)
LOCK_NAME = ".lock"
# Files and folders only a run writes (right after opening its database): finding one of them without a
# database means the run's record was lost, and starting afresh would pay for everything again.
RUN_MARKERS = ("config.yaml", "data", "student", "index", "embeddings.sqlite")
_FIX = "restore it from a backup, or use a new --run-dir"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def lock_held(run_dir: Path) -> bool:
    """Whether a process owns the run directory now. Probed with a non-blocking shared flock released at
    once, on a file opened read-only (so it also works on a read-only copy and creates nothing)."""
    try:
        handle = open(run_dir / LOCK_NAME, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError:
        return False  # no lock file: no process ever owned it, or one that cannot have it now
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        handle.close()  # closing releases a lock we may have taken
    return False


def _has_wal_data(db_path: Path) -> bool:
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False


def connect_readonly(db_path: Path, *, writer_active: bool | None = None) -> sqlite3.Connection:
    """A connection that reads ``db_path`` without creating, changing or needing write access to anything.

    ``immutable=1`` when the main file holds every committed transaction and no process writes (a cleanly
    closed run, or a read-only copy of one); else ``mode=ro``, which reads what a killed or running process
    left in the WAL. Where ``mode=ro`` cannot open (a read-only directory without the ``-shm`` file), fall
    back to ``immutable=1``: the main file as of the last checkpoint is still better than nothing."""
    active = lock_held(db_path.parent) if writer_active is None else writer_active
    uri = db_path.resolve().as_uri()
    if not active and not _has_wal_data(db_path):
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opening is lazy: force it here
        return db
    except sqlite3.OperationalError:
        if active:
            raise
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)


def unreadable(db_path: Path, exc: sqlite3.DatabaseError) -> RunDirError:
    """The one-line error for a database SQLite refuses (not a database, truncated, damaged)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return RunDirError(f"{db_path}: the run database is unreadable ({reason}): {_FIX}")


def _lost_record(run_dir: Path, db_path: Path) -> RunDirError | None:
    """A missing or empty database beside files only a run writes: the ledger and cache are gone."""
    try:
        empty = db_path.stat().st_size == 0
    except FileNotFoundError:
        empty = None  # missing
    if empty is False or _has_wal_data(db_path):
        return None
    found = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if not found:
        return None
    what = "is empty" if empty else "is missing"
    return RunDirError(
        f"{db_path}: {what} but the run directory holds run files ({', '.join(found)}): starting afresh would "
        f"pay for every response again; {_FIX}"
    )


def check_run_dir(run_dir: Path) -> str | None:
    """Check a run directory before a run touches it; returns the last config the run recorded (YAML), if any.

    Refuses (RunDirError) a path that is not a directory, a read-only directory, one another process owns,
    a lost database beside run files, and a database that is unreadable or fails SQLite's quick_check
    (a truncated file reads fine until the first missing page, which could be after money was spent)."""
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory: pass a directory (new or of an earlier run) as --run-dir")
    db_path = run_dir / DB_NAME
    if not os.access(run_dir, os.W_OK) or (db_path.exists() and not os.access(db_path, os.W_OK)):
        raise RunDirError(
            f"{run_dir}: the run directory is read-only: make it writable, or copy it and pass the copy as --run-dir"
        )
    if lock_held(run_dir):
        raise RunDirError(
            f"{run_dir}: another sedi process is using this run directory: wait for it or pick another --run-dir"
        )
    refuse_lost_record(run_dir)
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return None  # a new run
    try:
        db = connect_readonly(db_path, writer_active=False)
        try:
            verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                raise RunDirError(f"{db_path}: the run database is damaged ({verdict}): {_FIX}")
            if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='configs'").fetchone():
                return None
            row = db.execute("SELECT body FROM configs ORDER BY id DESC LIMIT 1").fetchone()
            return None if row is None else str(row[0])
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from None


def recorded_meta(run_dir: Path, key: str) -> str | None:
    """One ``meta`` value of an existing run, read without taking the run directory (call after check_run_dir)."""
    db_path = run_dir / DB_NAME
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return None
    try:
        db = connect_readonly(db_path, writer_active=False)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:  # no meta table yet
        return None
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from None
    return None if row is None else str(row[0])


def _disk_message(run_dir: Path, exc: BaseException) -> str | None:
    if isinstance(exc, sqlite3.DatabaseError):
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_FULL" or "disk is full" in str(exc):
            return f"{run_dir / DB_NAME}: disk full: free space on that disk and rerun the same command"
        if name == "SQLITE_READONLY" or "readonly database" in str(exc):
            return f"{run_dir}: the run directory became read-only: make it writable and rerun the same command"
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc):
            return str(unreadable(run_dir / DB_NAME, exc))
        if name == "SQLITE_CANTOPEN":
            return f"{run_dir / DB_NAME}: cannot open the run database: check the run directory's permissions"
        return None
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        where = exc.filename or run_dir
        return f"{where}: disk full: free space on that disk and rerun the same command"
    inside = isinstance(exc, OSError) and exc.filename is not None and _inside(Path(str(exc.filename)), run_dir)
    if isinstance(exc, OSError) and exc.errno in _READ_ONLY and inside:
        return f"{exc.filename}: cannot write in the run directory ({exc.strerror}): make it writable and rerun"
    return None


def _inside(path: Path, run_dir: Path) -> bool:
    return path.resolve().is_relative_to(run_dir.resolve())


@contextlib.contextmanager
def run_dir_errors(run_dir: Path) -> Iterator[None]:
    """Turn a full disk, a directory turned read-only or a damaged database under a run into one RunDirError.

    SQLite rolls back the transaction that failed and ``fsync_write`` replaces files only whole, so what
    was committed before the fault stays as it was, and rerunning the same command resumes from there."""
    try:
        yield
    except (sqlite3.DatabaseError, OSError) as exc:
        message = _disk_message(run_dir, exc)
        if message is None:
            raise
        raise RunDirError(message) from exc


def take_lock(run_dir: Path) -> IO[str]:
    """Own the run directory (an exclusive flock held until the returned file is closed)."""
    try:
        handle = open(run_dir / LOCK_NAME, "a")  # noqa: SIM115 - the caller holds it for the run's lifetime
    except OSError as exc:
        raise RunDirError(
            f"{run_dir}: cannot write in the run directory ({exc.strerror}): make it writable, or copy it and "
            "pass the copy as --run-dir"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirError(
            f"{run_dir}: another sedi process is using this run directory: wait for it or pick another --run-dir"
        ) from None
    return handle


def refuse_lost_record(run_dir: Path) -> None:
    """Raise when the database is missing or empty beside files only a run writes (see RUN_MARKERS)."""
    lost = _lost_record(run_dir, run_dir / DB_NAME)
    if lost is not None:
        raise lost


def read_run_db(run_dir: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """``query`` on a read-only connection to the run's database (``sedi status``, the Python API): a missing,
    empty or unreadable one is one :class:`RunDirError` line."""
    db_path = run_dir / DB_NAME
    if not db_path.is_file() or db_path.stat().st_size == 0:
        what = "missing" if not db_path.is_file() else "empty"
        raise RunDirError(
            f"{run_dir}: no sedi run here ({DB_NAME} {what}): pass a directory made by 'sedi run --run-dir'"
        )
    try:
        db = connect_readonly(db_path)  # changes nothing in the directory and works on a read-only copy
        try:
            return query(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise unreadable(db_path, exc) from None
