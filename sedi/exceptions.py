"""Every error sedi raises on purpose, in one hierarchy.

::

    SediError                 base class; the CLI prints ``error: <message>`` and exits 2
    ├── ConfigError           a config, seed or data file is missing, malformed or inconsistent
    ├── TeacherError          the teacher API failed in a way retries did not fix
    │   └── TeacherUnreachable    no connection could be made (wrong URL, server down)
    ├── BudgetExceeded        a request was not sent because it could exceed a budget cap
    └── RunDirError           the run directory is in use by another process or unusable

Messages are one line and name the file, the field and the fix, so that a user can act on them
without reading a traceback.
"""

from __future__ import annotations


class SediError(Exception):
    """Base class of every error sedi raises deliberately."""


class ConfigError(SediError):
    """A config, seed or data file is missing, malformed, or holds an invalid value."""


class TeacherError(SediError):
    """The teacher API returned an error that retrying did not fix (or that no retry can fix)."""


class TeacherUnreachable(TeacherError):
    """No connection to the teacher could be made within the retry policy."""


class BudgetExceeded(SediError):
    """A request was refused before sending because its worst case could exceed a budget cap.

    ``cap`` names the budget field that refused it (``max_calls``, ``max_tokens`` or ``max_cost_usd``).
    """

    def __init__(self, message: str, cap: str) -> None:
        super().__init__(message)
        self.cap = cap


class RunDirError(SediError):
    """The run directory is locked by another running process, or cannot be used."""


__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "RunDirError",
    "SediError",
    "TeacherError",
    "TeacherUnreachable",
]
