"""sedi-instruct: SeDi-Instruct data generation with a hard API budget.

The public surface is small: the ``sedi`` command, :func:`sedi.config.load_config`, and the
exceptions below. Heavy libraries are imported only where they are used.
"""

from sedi.exceptions import (
    BudgetExceeded,
    ConfigError,
    ParseError,
    RunDirError,
    SediError,
    TeacherError,
    TeacherUnreachable,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "ParseError",
    "RunDirError",
    "SediError",
    "TeacherError",
    "TeacherUnreachable",
    "__version__",
]
