"""The first Ctrl-C with teacher requests in flight drains instead of interrupting (sedi/teacher/interrupt.py), with
real signals sent to this process. Whole runs interrupted this way: tests/test_run_e2e.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sedi.teacher.interrupt import finish_in_flight_on_interrupt


@pytest.fixture(autouse=True)
def ctrl_c_as_at_a_terminal() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in any interactive process: a shell that starts a command in the
    background (as CI may) leaves SIGINT ignored, and signal handlers are inherited that way."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@dataclass
class Client:
    in_flight: int = 0
    draining: bool = False

    def drain(self) -> None:
        self.draining = True


def test_the_first_ctrl_c_with_requests_in_flight_drains_and_the_second_interrupts() -> None:
    client, said = Client(in_flight=3), []
    with pytest.raises(KeyboardInterrupt), finish_in_flight_on_interrupt(client, said.append):
        os.kill(os.getpid(), signal.SIGINT)
        assert client.draining and said and "the 3 teacher request(s) already sent" in said[0]
        os.kill(os.getpid(), signal.SIGINT)  # abandon them: the handler in force before takes over
        pytest.fail("the second Ctrl-C did not interrupt")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler before is back


def test_ctrl_c_with_nothing_in_flight_interrupts_at_once() -> None:
    client = Client()
    with pytest.raises(KeyboardInterrupt), finish_in_flight_on_interrupt(client, lambda _: None):
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("Ctrl-C did not interrupt")
    assert not client.draining
