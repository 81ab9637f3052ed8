"""sedi-instruct: SeDi-Instruct data generation with a hard API budget.

The public surface is small: the ``sedi`` command; its Python twin :func:`sedi.run`, :func:`sedi.open_run` and
:func:`sedi.compare` (:mod:`sedi.api`, documented in docs/api.md); :func:`sedi.config.model.load_config`; and the
exceptions of :mod:`sedi.exceptions` (re-exported here). Heavy libraries are imported only where used.
"""

from sedi.api import Comparison as Comparison
from sedi.api import Run as Run
from sedi.api import compare as compare
from sedi.api import open_run as open_run
from sedi.api import run as run

# Explicit re-exports (``X as X``): the names users catch, without importing anything heavy.
from sedi.exceptions import BudgetExceeded as BudgetExceeded
from sedi.exceptions import ConfigError as ConfigError
from sedi.exceptions import RunDirError as RunDirError
from sedi.exceptions import SediError as SediError
from sedi.exceptions import TeacherError as TeacherError
from sedi.exceptions import TeacherUnreachable as TeacherUnreachable

__version__ = "0.1.0"
