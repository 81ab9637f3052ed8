"""Code the benchmark scripts and the tests share, kept out of the installed product: ``pip install .`` ships
``sedi``, ``diversity`` and ``feedback`` only (``[tool.setuptools.packages.find]`` in pyproject.toml).

- ``filter_reference``: the filter benchmarks' corpus (400 T0 prompts in ``data/``), the candidate stream cut
  from it, and Stanford Alpaca's ROUGE-L loop as the reference (``bench_rouge.py``, ``bench_filter.py``);
- ``scale``: the embedding rule at a million derived vectors (``bench_filter.py --limit``, ``bench_index_kinds.py``);
- ``sample_run``: small synthetic run directories for looking at ``sedi report`` without a teacher
  (``screenshot_report.py`` and the report, viewer and comparison tests). Its rows are written by
  ``sedi.store.synthetic``, which stays in the store wing because only the store spells SQL.

It lives in ``scripts/`` so that ``python scripts/<name>.py`` imports it with no change to the import path (Python
puts the script's folder there); pytest and mypy find it through ``pythonpath`` and ``mypy_path``.
"""
