"""Ctrl-C while teacher requests are in flight: finish them, then stop.

A request that has left is billed whatever happens next. Cancelling it throws its answer away, and the resumed
run pays for the same request again: the headline benchmark's Ctrl-C left 50 of its 900 calls charged and
unanswered (docs/results.md). So the first Ctrl-C (SIGINT) while requests are in flight sends nothing more and
retries nothing, lets those requests finish (their answers are cached as always), then interrupts the run; a
second Ctrl-C abandons them at once, as Ctrl-C did before (each charged its worst case, ``interrupted``). With
nothing in flight, the first Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol


class Drainable(Protocol):
    in_flight: int
    draining: bool

    def drain(self) -> None: ...


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def finish_in_flight_on_interrupt(client: Drainable, say: Callable[[str], None] = _to_stderr) -> Iterator[None]:
    """While inside, the first SIGINT with requests in flight drains ``client`` instead of interrupting. Signal
    handlers belong to the main thread: elsewhere (a run started from a worker thread) this changes nothing."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # not the main thread, or SIGINT ignored or left to the OS: nothing of ours to change
        return

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if client.in_flight and not client.draining:
            client.drain()
            say(
                f"interrupting: waiting for the {client.in_flight} teacher request(s) already sent (paid for, so "
                "their answers are kept); press Ctrl-C again to abandon them"
            )
            return
        previous(signum, frame)  # as without this: asyncio cancels the run, or KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
