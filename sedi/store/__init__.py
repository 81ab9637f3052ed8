"""The run directory and its SQLite database: the one owner of the run's durable state and of every SQL
statement (``tests/test_sql_owner.py`` fails on SQL anywhere else); callers get named queries returning typed rows.

- ``db.RunStore`` opens and migrates the database (``schema``) inside a locked run directory (``rundir``);
- ``ledger`` records every paid teacher call before it is sent, ``batch_jobs_table`` the Batch API's jobs;
- ``candidates`` and ``dataset`` read and write the generated tasks, ``plans`` what each request showed;
- ``seeds`` the seed pool and its history, ``training`` batches, steps and losses, ``signals`` each task's
  training signals for the export;
- readers: ``summary_queries`` (``sedi status``), ``report_queries`` (report, compare, estimate, export),
  ``frames`` (the Python API's tables), ``viewer_rows`` (the report's data viewer);
- ``synthetic`` writes the synthetic runs of ``benchmarks.sample_run``.
"""
