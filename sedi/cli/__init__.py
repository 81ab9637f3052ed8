"""The ``sedi`` command: ``app`` (the typer application and its commands), ``serve`` (``sedi serve-teacher``),
``scaffold`` (``sedi init``) and ``estimate`` (``sedi estimate``)."""
