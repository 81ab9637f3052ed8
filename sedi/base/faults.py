"""Crash points for resumption tests: with ``SEDI_CRASH_AT=<point>`` in the environment the process kills
itself with SIGKILL at that point (no cleanup, no flush), exactly as a power cut or the OOM killer would.
Points: ``generate:R`` (after round R's first response is stored), ``train:R`` (after round R's steps are
recorded, before the stage is marked), ``feedback:R`` (inside the feedback transaction, before it commits),
``batch:created`` (after a Batch API job is created, before its id is recorded).
Unset in normal use; costs one dictionary lookup."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("SEDI_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
