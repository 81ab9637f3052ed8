"""The ``sedi`` command: ``app`` (the typer application, which registers every command, ``sedi config`` and
``sedi init``, and the entry point ``main``), ``running`` (``sedi run``, ``compare``, ``estimate``, ``status``),
``results`` (``sedi report``, ``export``, ``export-model``), ``shared`` (options, exit codes and progress bars
the commands share), ``serve`` (``sedi serve-teacher``), ``scaffold`` (what ``sedi init`` writes) and
``estimate`` (the forecast behind ``sedi estimate``)."""
