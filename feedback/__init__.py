"""Training rounds, per-step signals and seed re-selection on plain types.

Never imports ``sedi`` or ``diversity``. Filled in by the feedback issue.
"""
