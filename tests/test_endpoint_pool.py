"""Routing over a pool of teacher endpoints on plain types: least outstanding, set-aside and probe, failover."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from sedi.teacher.endpoint_pool import COOLDOWN_S, FAILURES_TO_SET_ASIDE, EndpointPool
from tests.helpers import rows, scripted_args, sedi, status
from tests.servers import serve_app

URLS = ["http://a/v1", "http://b/v1", "http://c/v1"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_attempts_go_to_the_endpoint_with_the_fewest_in_flight() -> None:
    pool = EndpointPool([(url, url.upper()) for url in URLS])
    with pool.attempt() as first, pool.attempt() as second, pool.attempt() as third:
        assert [first.base_url, second.base_url, third.base_url] == URLS  # spread, in the listed order
        assert first.client == "HTTP://A/V1"  # each endpoint has its own client
        with pool.attempt() as fourth:
            assert fourth.base_url == URLS[0]
    with pool.attempt() as member:
        assert member.base_url == URLS[0] and member.outstanding == 1
    assert all(m.outstanding == 0 for m in pool.members)


def test_a_failing_endpoint_is_set_aside_after_repeated_failures_then_probed_once() -> None:
    clock = Clock()
    pool = EndpointPool([(url, url) for url in URLS[:2]], clock=clock)
    a = pool.members[0]
    for _ in range(FAILURES_TO_SET_ASIDE - 1):
        pool.record(a, failed=True)
    assert pool.pick().base_url == URLS[0]  # two failures: still in
    pool.record(a, failed=True)
    assert [pool.pick().base_url for _ in range(3)] == [URLS[1]] * 3
    clock.now += COOLDOWN_S
    assert pool.pick().base_url == URLS[0]  # back for a probe
    pool.record(a, failed=True)  # the probe fails: aside again at once, for twice as long
    clock.now += COOLDOWN_S
    assert pool.pick().base_url == URLS[1]
    clock.now += COOLDOWN_S
    assert pool.pick().base_url == URLS[0]
    pool.record(a, failed=False)  # a success clears everything
    pool.record(a, failed=True)
    assert pool.pick().base_url == URLS[0] and a.set_asides == 0


def test_a_retry_avoids_the_endpoint_that_just_failed_unless_it_is_the_only_one() -> None:
    pool = EndpointPool([(url, url) for url in URLS[:2]])
    assert pool.pick(avoid=URLS[0]).base_url == URLS[1]
    single = EndpointPool([(URLS[0], URLS[0])])
    assert single.pick(avoid=URLS[0]).base_url == URLS[0]


def test_when_every_endpoint_is_aside_the_one_back_first_is_tried() -> None:
    clock = Clock()
    pool = EndpointPool([(url, url) for url in URLS[:2]], clock=clock)
    for _ in range(FAILURES_TO_SET_ASIDE):
        pool.record(pool.members[1], failed=True)
    clock.now += 1
    for _ in range(FAILURES_TO_SET_ASIDE):
        pool.record(pool.members[0], failed=True)
    assert pool.pick().base_url == URLS[1]


@pytest.mark.slow
def test_a_run_uses_both_servers_and_finishes_on_one_when_the_other_dies(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Two real servers of the scripted teacher behind one run; the first is shut down (its port closed) after
    answering 3 requests. Nothing is lost: every request is answered once, by one server or the other."""
    from sedi.serve import create_app
    from tests.scripted_teacher import ScriptedEngine

    with contextlib.ExitStack() as b_stack, contextlib.ExitStack() as a_stack:
        a = a_stack.enter_context(serve_app(create_app(ScriptedEngine()), delay=0.2))
        b = b_stack.enter_context(serve_app(create_app(ScriptedEngine()), delay=0.2))

        def kill_a_after_three() -> None:
            deadline = time.monotonic() + 120
            while a.counter.total < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            a_stack.close()

        killer = threading.Thread(target=kill_a_after_three, daemon=True)
        killer.start()
        run_dir = tmp_path / "run"
        args = scripted_args(
            run_dir, a, tiny_model_dir,
            "--set", "teacher.base_url=null", "--set", f"teacher.base_urls=[{a.base_url}, {b.base_url}]",
            "--set", "teacher.concurrency=4", "--set", "generation.calls_per_round=6", "--set", "run.max_rounds=2",
            "--set", "teacher.backoff_base_s=0.05", "--set", "student.heldout_size=0",
        )  # fmt: skip
        result = sedi(*args)
        killer.join(timeout=5)
    assert result.returncode == 0, result.stderr
    assert status(run_dir)["state"] == "finished"
    by_server = dict(
        rows(run_dir, "SELECT base_url, COUNT(*) FROM calls WHERE status IN ('ok', 'length') GROUP BY base_url")
    )
    assert set(by_server) == {a.base_url, b.base_url} and by_server[a.base_url] >= 1
    # the dead server's failures are connection errors; each of those requests was then answered by the other
    # ('refused': the port was closed, nothing was sent, and it is not counted as a call; 'error': dropped in flight)
    failed = rows(run_dir, "SELECT request_key, base_url, status FROM calls WHERE status IN ('error', 'refused')")
    assert failed and all(url == a.base_url for _, url, _ in failed), failed
    refused = sum(state == "refused" for _, _, state in failed)
    assert status(run_dir)["calls"] == rows(run_dir, "SELECT COUNT(*) FROM calls")[0][0] - refused
    answered = dict(rows(run_dir, "SELECT request_key, base_url FROM calls WHERE status IN ('ok', 'length')"))
    assert all(answered.get(key) == b.base_url for key, _, _ in failed)
    once = rows(run_dir, "SELECT COUNT(*) = COUNT(DISTINCT request_key) FROM calls WHERE status IN ('ok', 'length')")
    assert once == [(1,)]  # no request paid for twice
    assert rows(run_dir, "SELECT COUNT(*) FROM responses") == rows(
        run_dir, "SELECT COUNT(*) FROM calls WHERE status IN ('ok', 'length')"
    )
