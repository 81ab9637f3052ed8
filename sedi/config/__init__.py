"""What the user gives, validated: the run's configuration (``sedi.yaml``) and the seed tasks.

Imports nothing from the code it configures. ``load_config`` and ``SediConfig`` are the public names; the
sections live in ``run``, ``teacher``, ``student`` and ``shaping``, the YAML reading in ``yaml_source`` and
the seed files in ``seeds``.
"""

from sedi.config.model import SediConfig, load_config

__all__ = ["SediConfig", "load_config"]
