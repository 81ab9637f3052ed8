"""The run directory and its SQLite database: the one owner of the run's durable state.

``db.RunStore`` opens and migrates the database (``schema``) inside a locked run directory (``rundir``);
``ledger`` records every paid teacher call before it is sent; ``candidates`` and ``dataset`` read and write
the generated tasks.
"""
