"""`sedi run` end to end against a real local OpenAI-compatible server (the tiny model), counted at the server."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sedi.config.seeds import bundled_path
from tests.helpers import ledger, sedi, status
from tests.servers import Served, serve_app

pytestmark = pytest.mark.slow  # every test here starts `python -m sedi`

FAKE_KEY = "sk-SEDI-FAKE-KEY-7f3a9c1e5b"


@pytest.fixture
def engine(tiny_engine: Any) -> Any:
    return tiny_engine


@pytest.fixture
def server(engine: Any) -> Iterator[Served]:
    """A fresh server per test, so its request counts belong to that test alone."""
    from sedi.serve import create_app

    with serve_app(create_app(engine)) as served:
        yield served


def run_args(run_dir: Path, served: Served, engine: Any, *extra: str) -> list[str]:
    sets = {
        "teacher.provider": "openai",
        "teacher.base_url": served.base_url,
        "teacher.model": engine.model_id,
        "teacher.backoff_base_s": "0",
        "generation.sampling.max_tokens": "24",
        "generation.calls_per_round": "3",
        "generation.human_in_context": "2",  # alpaca-style blocks with outputs: keep within the tiny model's context
        "run.max_rounds": "2",
    }
    args = ["run", "--run-dir", str(run_dir)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args + list(extra)


def test_run_stores_responses_and_rerun_makes_zero_requests(tmp_path: Path, server: Served, engine: Any) -> None:
    run_dir = tmp_path / "run"
    first = sedi(*run_args(run_dir, server, engine))
    assert first.returncode == 0, first.stderr
    assert server.counter.counts["/v1/completions"] == 6
    assert server.counter.total == 6  # nothing else: no probing requests behind the ledger's back
    summary = status(run_dir)
    assert summary["state"] == "finished"
    assert summary["calls"] == 6 and summary["responses"] == 6 and summary["cache_hits"] == 0
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    prompts = [s.body["prompt"] for s in server.counter.seen]
    # Completion prompts ending where the next task begins (learned shapes, the default, show 1 to 4 tasks)
    ends = [re.search(r"\nTask (\d+)\nInstruction:$", p.rstrip()) for p in prompts]
    assert len(set(prompts)) == 6 and all(ends), [p[-40:] for p in prompts]
    assert {int(m[1]) for m in ends if m} <= {2, 3, 4, 5}, [p[-40:] for p in prompts]  # 1 to 4 tasks shown

    second = sedi(*run_args(run_dir, server, engine))
    assert second.returncode == 0, second.stderr
    assert server.counter.total == 6  # counted at the server: the rerun sent nothing
    again = status(run_dir)
    assert again["calls"] == 6 and again["state"] == "finished"  # finished rounds are not replayed at all


def test_call_cap_holds_with_high_concurrency_and_raising_it_continues(
    tmp_path: Path, server: Served, engine: Any
) -> None:
    run_dir = tmp_path / "run"
    capped = sedi(*run_args(run_dir, server, engine, "--set", "budget.max_calls=5", "--set", "teacher.concurrency=8",
                             "--set", "generation.calls_per_round=12", "--set", "run.max_rounds=1"))  # fmt: skip
    assert capped.returncode == 3, capped.stderr  # the documented exit code of a budget stop
    assert "budget exhausted: budget.max_calls is 5" in capped.stderr
    assert server.counter.counts["/v1/completions"] == 5
    summary = status(run_dir)
    assert summary["state"] == "budget_exhausted" and summary["calls"] == 5 == len(ledger(run_dir))

    raised = sedi(*run_args(run_dir, server, engine, "--set", "budget.max_calls=12", "--set", "teacher.concurrency=8",
                            "--set", "generation.calls_per_round=12", "--set", "run.max_rounds=1"))  # fmt: skip
    assert raised.returncode == 0, raised.stderr
    assert server.counter.counts["/v1/completions"] == 12  # the 5 paid responses were not asked again
    summary = status(run_dir)
    assert summary["state"] == "finished" and summary["calls"] == 12 and summary["cache_hits"] == 5
    bodies = [json.dumps(s.body, sort_keys=True) for s in server.counter.seen]
    assert len(set(bodies)) == 12


def test_token_cap_holds_at_the_server(tmp_path: Path, server: Served, engine: Any) -> None:
    run_dir = tmp_path / "run"
    cap = 1500
    result = sedi(*run_args(run_dir, server, engine, "--set", f"budget.max_tokens={cap}", "--set",
                            "teacher.concurrency=8", "--set", "generation.calls_per_round=12"))  # fmt: skip
    assert result.returncode == 3, result.stderr  # stopped by its budget
    rows = ledger(run_dir)
    assert 0 < len(rows) == server.counter.counts["/v1/completions"] < 12
    summary = status(run_dir)
    assert summary["state"] == "budget_exhausted"
    assert summary["prompt_tokens"] + summary["completion_tokens"] <= cap


def test_api_key_is_used_but_never_written(tmp_path: Path, server: Served, engine: Any) -> None:
    run_dir = tmp_path / "run"
    result = sedi(*run_args(run_dir, server, engine, "--set", "run.max_rounds=1"), env={"OPENAI_API_KEY": FAKE_KEY})
    assert result.returncode == 0, result.stderr
    assert {s.authorization for s in server.counter.seen} == {f"Bearer {FAKE_KEY}"}  # the key was really used
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "sedi.db" for p in files)
    for path in files:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
    assert FAKE_KEY not in result.stdout + result.stderr


def test_the_teacher_and_seeds_a_run_started_with_guard_its_resume(tmp_path: Path, server: Served, engine: Any) -> None:
    """The teacher found through $OPENAI_BASE_URL is recorded, and a resume that would send the rest of the
    run to another teacher, or plan it from other seed tasks behind the same path, is refused before a call."""
    run_dir, seeds = tmp_path / "run", tmp_path / "seeds.jsonl"
    seeds.write_text(bundled_path("seed_tasks.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    args = run_args(run_dir, server, engine, "--set", "run.max_rounds=1", "--set", "teacher.base_url=",
                    "--set", f"seeds.path={seeds}")  # fmt: skip
    first = sedi(*args, env={"OPENAI_BASE_URL": server.base_url})
    assert first.returncode == 0, first.stderr
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["teacher"]["base_url"] == server.base_url.rstrip("/")
    sent = server.counter.total

    moved = sedi(*args, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert moved.returncode == 2 and len(moved.stderr.strip().splitlines()) == 1, moved.stderr
    assert "teacher.base_url" in moved.stderr and "127.0.0.1:9" in moved.stderr

    lines = seeds.read_text(encoding="utf-8").splitlines()
    task = json.loads(lines[0])
    task["instruction"] += " Answer in French."
    seeds.write_text("\n".join([json.dumps(task), *lines[1:]]) + "\n", encoding="utf-8")
    edited = sedi(*args, env={"OPENAI_BASE_URL": server.base_url})
    assert edited.returncode == 2 and len(edited.stderr.strip().splitlines()) == 1, edited.stderr
    assert str(seeds) in edited.stderr and "'seeds.path'" in edited.stderr
    assert server.counter.total == sent  # neither refused resume reached a teacher


def test_kill_9_mid_generation_then_resume(tmp_path: Path, engine: Any) -> None:
    from sedi.serve import create_app

    run_dir = tmp_path / "run"
    with serve_app(create_app(engine), delay=0.4) as slow:
        args = run_args(run_dir, slow, engine, "--set", "teacher.concurrency=2", "--set",
                        "generation.calls_per_round=6")  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "sedi", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        # Kill once some responses are stored and both slots hold requests that reached the server.
        while not (slow.counter.total >= 4 and slow.counter.in_flight == 2):
            assert time.monotonic() < deadline and proc.poll() is None, "run ended before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sent_before_kill = slow.counter.total
        cached_before = {
            row[0] for row in sqlite3.connect(run_dir / "sedi.db").execute("SELECT request FROM responses")
        }
        assert 2 <= len(cached_before) <= sent_before_kill - 2
        assert len(ledger(run_dir)) == sent_before_kill  # a row for every request that left, none extra

        resumed = sedi(*args)
        assert resumed.returncode == 0, resumed.stderr

    rows = ledger(run_dir)
    assert len(rows) == slow.counter.total  # the ledger matches the server's count exactly
    assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))  # no gaps
    assert len({(r["request_key"], r["attempt"]) for r in rows}) == len(rows)  # no duplicates
    assert sum(r["status"] == "interrupted" for r in rows) == 2
    # every response received before the kill was asked for exactly once
    asked = Counter((s.body["prompt"], s.body["seed"]) for s in slow.counter.seen)
    for request_json in cached_before:
        request = json.loads(request_json)
        assert asked[(request["prompt"], request["seed"])] == 1
    # the two killed in-flight requests were asked again, once each; all 12 planned requests answered
    assert sorted(asked.values()).count(2) == 2 and len(asked) == 12
    summary = status(run_dir)
    assert summary["state"] == "finished" and summary["responses"] == 12


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


ANSWERED = {"ok", "length"}  # ledger statuses of an attempt that brought an answer


def _interrupt_with_requests_in_flight(
    run_dir: Path, slow: Served, engine: Any, signals: int
) -> tuple[subprocess.Popen[str], list[str], int, float]:
    """Start a run against ``slow``, send ``signals`` SIGINTs (0.2 s apart) once both of its slots hold requests
    that reached the server; returns the process (ended), its arguments, the requests sent until then and the
    seconds from the first SIGINT to the end."""
    args = run_args(run_dir, slow, engine, "--set", "teacher.concurrency=2", "--set", "generation.calls_per_round=6")
    # SIGINT as at a terminal, even where this test was started in the background (which leaves it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "sedi", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (slow.counter.total >= 2 and slow.counter.in_flight == 2):
        assert time.monotonic() < deadline and proc.poll() is None, "run ended before it could be interrupted"
        time.sleep(0.005)
    sent, interrupted = slow.counter.total, time.monotonic()
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    proc.wait(timeout=120)
    return proc, args, sent, time.monotonic() - interrupted


def test_ctrl_c_keeps_the_answers_in_flight_and_a_resume_pays_for_nothing_twice(tmp_path: Path, engine: Any) -> None:
    from sedi.serve import create_app

    run_dir = tmp_path / "run"
    with serve_app(create_app(engine), delay=1.5) as slow:
        proc, args, sent, _ = _interrupt_with_requests_in_flight(run_dir, slow, engine, signals=1)
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.returncode == 130, err
        assert "waiting for the 2 teacher request(s) already sent" in err and "rerun the same command" in err
        assert slow.counter.total == sent  # nothing was sent after Ctrl-C, nothing retried
        rows = ledger(run_dir)
        assert len(rows) == sent and {r["status"] for r in rows} <= ANSWERED  # the two in flight were answered
        assert status(run_dir)["state"] == "interrupted" and status(run_dir)["responses"] == sent
        resumed = sedi(*args)
        assert resumed.returncode == 0, resumed.stderr
    asked = Counter((s.body["prompt"], s.body["seed"]) for s in slow.counter.seen)
    assert set(asked.values()) == {1} and len(asked) == 12  # every request asked once, over both starts
    assert {r["status"] for r in ledger(run_dir)} <= ANSWERED


def test_a_second_ctrl_c_abandons_the_requests_in_flight(tmp_path: Path, engine: Any) -> None:
    from sedi.serve import create_app

    run_dir = tmp_path / "run"
    with serve_app(create_app(engine), delay=30) as slow:
        proc, _, sent, seconds = _interrupt_with_requests_in_flight(run_dir, slow, engine, signals=2)
        assert proc.returncode == 130 and seconds < 20, seconds  # it did not wait the 30 s for the answers
    rows = ledger(run_dir)
    # The two abandoned rows stay 'sent' until the next start marks them interrupted (charged their worst case).
    assert len(rows) == sent and [r["status"] for r in rows].count("sent") == 2
    assert status(run_dir)["responses"] == sent - 2


def test_chat_mode_against_a_model_with_a_chat_template(tmp_path: Path, server: Served, engine: Any) -> None:
    run_dir = tmp_path / "run"
    result = sedi(*run_args(run_dir, server, engine, "--set", "teacher.mode=chat", "--set", "run.max_rounds=1"))
    assert result.returncode == 0, result.stderr
    assert server.counter.counts["/v1/chat/completions"] == 3 and server.counter.total == 3
    roles = [m["role"] for m in server.counter.seen[0].body["messages"]]
    assert roles == ["system", "user"]
    assert status(run_dir)["responses"] == 3


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def local_args(run_dir: Path, tiny_model_dir: Path, engine: Any, *extra: str) -> list[str]:
    return [
        "run", "--run-dir", str(run_dir),
        "--set", "teacher.provider=local", "--set", f"teacher.local.model={tiny_model_dir}",
        "--set", f"teacher.model={engine.model_id}", "--set", "generation.sampling.max_tokens=16",
        "--set", "generation.calls_per_round=2", "--set", "run.max_rounds=1",
        "--set", "generation.human_in_context=2", *extra,
    ]  # fmt: skip


def test_local_provider_starts_logs_and_stops_its_server(tmp_path: Path, tiny_model_dir: Path, engine: Any) -> None:
    run_dir = tmp_path / "run"
    result = sedi(*local_args(run_dir, tiny_model_dir, engine, "--set", "teacher.concurrency=3"))
    assert result.returncode == 0, result.stderr
    summary = status(run_dir)
    assert summary["state"] == "finished" and summary["calls"] == 2 == summary["responses"]
    log = (run_dir / "logs" / "teacher.log").read_text()
    assert "127.0.0.1" in log and "/v1/completions" in log
    assert "up to 3 requests decode together" in log  # the server batches as many as the run keeps in flight
    # a finished run served wholly from the cache does not even start the server
    before = log
    again = sedi(*local_args(run_dir, tiny_model_dir, engine, "--set", "teacher.concurrency=3"))
    assert again.returncode == 0 and (run_dir / "logs" / "teacher.log").read_text() == before


def test_killing_the_run_never_orphans_the_local_server(tmp_path: Path, tiny_model_dir: Path, engine: Any) -> None:
    run_dir = tmp_path / "run"
    args = local_args(run_dir, tiny_model_dir, engine, "--set", "generation.calls_per_round=400",
                      "--set", "generation.sampling.max_tokens=64")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "sedi", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ((run_dir / "sedi.db").exists() and status(run_dir)["responses"] >= 1):
        assert time.monotonic() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    (server_pid,) = _children(proc.pid)
    assert _alive(server_pid)
    assert os.getsid(server_pid) != os.getsid(proc.pid)  # a Ctrl-C at the terminal does not reach it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while _alive(server_pid):
        assert time.monotonic() < deadline, "the local teacher server outlived its killed run"
        time.sleep(0.2)
