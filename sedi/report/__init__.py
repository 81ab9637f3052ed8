"""What a run or a comparison shows: ``sedi status`` (``summary``), the HTML report (``page`` with ``plots``,
``feedback`` and ``html``) and the statistics behind comparisons (``stats``, ``arm_stats``)."""
