"""Several runs at once against one embedded teacher server: the arms and seeds of a benchmark side by side.

Run one by one, each ``provider: local`` run starts its own server (one model load each) and keeps it busy with
only its own ``teacher.concurrency`` requests. Run together, their requests decode in one batch of one server:
on two CPU cores a decoding step costs nearly the same for 16 rows as for 8 (2.2x the tokens/s, see docs/results.md,
"The embedded teacher server"), so N runs cost far less than N times one.

Each job runs in its own process, ``python -m experiment.parallel JOB_FILE``, which calls :func:`sedi.loop.run` with
the shared server's endpoint as an argument. Processes rather than threads: each run keeps its own asyncio loop,
budget, ledger, response cache and student exactly as when run alone, and a crash (an exception, a segfault, an
out-of-memory kill) ends that run alone; the others finish and the failure is reported. This entry point rather
than ``python -m sedi run CONFIG``: the endpoint reaches the run as an argument of ``run``, never as a setting
or an environment variable that a user's own run could pick up and so silently talk to another server. A plain
subprocess rather than ``multiprocessing``: spawn re-runs the caller's main script in every child, which fails
(or runs the script again) unless that script guards itself with ``if __name__ == "__main__"``.

The shared server is the one a solo run would start (:class:`sedi.teacher.endpoint.LocalTeacher` on the first job's
``teacher`` settings: the same model, model id, device and dtype; jobs that differ there get a server each), with
``--max-batch`` the sum of its jobs' ``teacher.concurrency`` up to ``SHARED_MAX_BATCH`` (40); requests beyond it wait
in the server's queue and take the places rows leave. A run's
request keys, and so its response cache, never name the server's URL or port: a run started here resumes alone
with the same cache, and its recorded config is the one a solo run records. Completions depend on what they
were batched with (see :mod:`sedi.serve._decoding`) whether the server is shared or not.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sedi.config.model import SediConfig
from sedi.teacher.endpoint import LocalTeacher, local_endpoint

Job = tuple[str, SediConfig, Path]  # (name, config, run directory)

# Rows a shared server decodes together at most. Measured on 2026-12-07 on a 2-core AVX2 CPU (float32), 96 requests
# of the default run's prompts (804 tokens, 96 completion tokens each) all in flight: 96 rows took 691 s, 40 rows
# with the rest queued 565 s (0.81x the tokens/s with 96). Until that day the server's thread pool let only 40 in
# whatever --max-batch said, so every benchmark so far ran at most 40 rows. Not measured on a GPU.
SHARED_MAX_BATCH = 40


@dataclass(frozen=True)
class JobResult:
    """How one job ended: ``state`` is the run's own (finished, budget_exhausted, interrupted) or ``failed``."""

    name: str
    run_dir: Path
    state: str
    message: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.state in ("finished", "budget_exhausted")


def _server_key(config: SediConfig) -> tuple[str, str, str, str]:
    """What :class:`LocalTeacher` passes to the server besides its port, batch size and parent: equal keys, one
    teacher."""
    teacher = config.teacher
    return (teacher.model, teacher.local.model, teacher.local.device, teacher.local.precision)


class _StudentSlots:
    """At most ``count`` holders at once across processes: one file lock per slot under ``slots``, which the kernel
    frees if its holder dies."""

    def __init__(self, slots: Path, count: int) -> None:
        self.slots, self.count = slots, count
        self._held: list[TextIO] = []

    def __enter__(self) -> None:
        self.slots.mkdir(parents=True, exist_ok=True)
        while True:
            for k in range(self.count):
                handle = open(self.slots / f"slot-{k}", "a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                self._held.append(handle)
                return
            time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        self._held.pop().close()  # releases the lock


def _stem(log_dir: Path, name: str) -> Path:
    return log_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _interrupt_when_orphaned(parent: int) -> None:
    """Interrupt this run (as Ctrl-C would: it records itself interrupted) once the process that started it is
    gone: the shared server exits with that process, so every later request of the run would fail."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGINT)


def _child(job_file: Path) -> None:
    """The body of one job's process (``python -m sedi.experiment.parallel JOB_FILE``): the run, its outcome written to
    ``JOB_FILE.result``. Every failure becomes the job's report; its traceback goes to the job's log."""
    spec = json.loads(job_file.read_text(encoding="utf-8"))
    result = job_file.with_suffix(".result")
    threading.Thread(target=_interrupt_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        from sedi.loop import run
        from sedi.stages import student

        if spec["max_training"]:
            slots, count = Path(spec["slots"]), int(spec["max_training"])
            student.limit_students(_StudentSlots(slots, count))
        base_url = spec["base_url"]
        shared = None if base_url is None else (lambda: local_endpoint(base_url))
        config = SediConfig.model_validate(spec["config"])
        outcome = run(config, Path(spec["run_dir"]), spec["source"], shared_teacher=shared)
        result.write_text(json.dumps([outcome.state, outcome.message]), encoding="utf-8")
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        result.write_text(json.dumps(["failed", f"{type(exc).__name__}: {exc}".splitlines()[0]]), encoding="utf-8")
        raise SystemExit(1) from None


def run_jobs(
    jobs: Sequence[Job],
    log_dir: Path,
    source: str = "sedi.experiment.parallel",
    *,
    max_training: int | None = None,
    on_done: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run every job at once, each in its own process, ``provider: local`` jobs against one shared embedded
    teacher server started here (its log: ``log_dir/teacher.log``); each job's output goes to
    ``log_dir/NAME.log``. ``max_training`` bounds how many runs use a student (train, per-example losses,
    held-out evaluation) at the same time. ``on_done`` is called as each job ends. Returns one result per job, in
    the order given; a failed job is reported there and never stops the others."""
    names = [name for name, _, _ in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    log_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for index, (_, config, _) in enumerate(jobs):
        if config.teacher.provider == "local":
            groups.setdefault(_server_key(config), []).append(index)
    servers: list[LocalTeacher] = []
    urls: dict[int, str] = {}
    results: dict[int, JobResult] = {}
    started = time.monotonic()
    try:
        for number, members in enumerate(groups.values()):
            first = jobs[members[0]][1].teacher
            wait_s = max(jobs[i][1].teacher.local.startup_timeout_s for i in members)
            teacher = first.model_copy(update={"local": first.local.model_copy(update={"startup_timeout_s": wait_s})})
            where = log_dir if len(groups) == 1 else log_dir / f"teacher-{number}"
            rows = min(SHARED_MAX_BATCH, sum(jobs[i][1].teacher.concurrency for i in members))
            server = LocalTeacher(teacher, where, max_batch=rows)
            servers.append(server)
            try:
                base_url = server.start().base_url
            except Exception as exc:  # its jobs fail; the other servers' jobs still run
                for i in members:
                    results[i] = JobResult(jobs[i][0], jobs[i][2], "failed", str(exc), 0.0)
                continue
            urls.update({i: base_url for i in members})
        _run_processes(jobs, source, urls, max_training, log_dir, results, started, on_done)
    finally:
        for server in servers:
            server.stop()
    return [results[i] for i in range(len(jobs))]


def _start(
    job: Job, source: str, base_url: str | None, max_training: int | None, log_dir: Path, alone: bool
) -> subprocess.Popen[bytes]:
    name, config, run_dir = job
    stem = _stem(log_dir, name)
    spec = {
        "config": config.model_dump(mode="json"),
        "run_dir": str(run_dir),
        "source": f"{source} ({name})",
        "base_url": base_url,
        "max_training": max_training,
        "slots": str(log_dir / "student-slots"),
    }
    job_file = stem.with_suffix(".job.json")
    job_file.write_text(json.dumps(spec), encoding="utf-8")
    job_file.with_suffix(".result").unlink(missing_ok=True)
    with open(stem.with_suffix(".log"), "ab") as log:  # six runs' progress bars would interleave on one terminal
        command = [sys.executable, "-m", "sedi.experiment.parallel", str(job_file)]
        env = dict(os.environ)
        if not alone:
            # One OpenMP thread per run (students, embeddings) when several share the cores: with two threads each,
            # three runs at once went 5 to 10 times slower (docs/results.md, "The 150-call benchmark"), since OpenMP's
            # parallel regions stall while other processes hold the cores. The caller's own setting wins.
            env.setdefault("OMP_NUM_THREADS", "1")
        # Its own session: a Ctrl-C at the terminal reaches this process alone, which passes it on (_run_processes).
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _outcome(job_file: Path, code: int) -> tuple[str, str]:
    try:
        state, message = json.loads(job_file.with_suffix(".result").read_text(encoding="utf-8"))
        return str(state), str(message)
    except (OSError, ValueError):  # killed before it could report
        return "failed", f"its process exited with code {code}"


def _run_processes(
    jobs: Sequence[Job],
    source: str,
    urls: dict[int, str],
    max_training: int | None,
    log_dir: Path,
    results: dict[int, JobResult],
    started: float,
    on_done: Callable[[JobResult], None] | None,
) -> None:
    alone, todo = len(jobs) == 1, [i for i in range(len(jobs)) if i not in results]
    running = {i: _start(jobs[i], source, urls.get(i), max_training, log_dir, alone) for i in todo}
    interrupted = False
    try:
        while running:
            for index in [i for i, p in running.items() if p.poll() is not None]:
                code = running.pop(index).wait()
                name, _, run_dir = jobs[index]
                job_file = _stem(log_dir, name).with_suffix(".job.json")
                state, message = _outcome(job_file, code)
                results[index] = JobResult(name, run_dir, state, message, time.monotonic() - started)
                if on_done is not None:
                    on_done(results[index])
            time.sleep(0.5)
    except KeyboardInterrupt:
        # Ctrl-C reached this process alone (each run has its own session): pass it on, so that each run finishes
        # the teacher requests it has in flight (paid for) and records itself interrupted, as a solo run does, while
        # the shared server stays up for them; a second Ctrl-C is passed on as well (the runs abandon them).
        _interrupt(running.values())
        interrupted = True
        try:
            for process in running.values():
                process.wait()
        except KeyboardInterrupt:
            _interrupt(running.values())
        raise
    finally:
        # Left early by an error here: each run is interrupted as above. Any run still going (an error, or a third
        # Ctrl-C) is killed if it does not end within a minute.
        if not interrupted:
            _interrupt(running.values())
        for process in running.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _interrupt(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
