"""One run, top to bottom: open the run directory, then rounds until a stop condition (generation.target_kept,
run.stop_when's marginal-value rule on held-out evaluations (sedi.stages.stopping), run.max_rounds, or the budget).

A round: generate (plan from the seed pool, see sedi.stages.steering; send, parse, store) -> filter (parse problems,
heuristics, similarity) -> instances (instruction-only prompts) -> batches -> train the student -> feedback
(``method: sedi``: attractive batches join the seed pool, weak seeds leave) -> measure and export.

Each stage that is done is recorded (``rounds.stage``), so a resumed run never redoes a finished stage:
an unfinished generate/filter stage is replayed from its start, where the response cache answers every
request already paid for and the filters recompute the same verdicts; training restarts from the
previous round's adapter with the same seed and batches; feedback commits in one transaction. When the run
ends (finished or out of budget) the last, partial feedback window is settled and the latest student is
evaluated if its round skipped evaluation (``student.eval_every``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sedi.base.faults import crash_point
from sedi.base.files import fsync_write
from sedi.base.vocabulary import ProgressHook, RoundStage, RunState
from sedi.config.model import SediConfig, dump_config
from sedi.config.seeds import Task, load_heldout_tasks, load_seed_tasks
from sedi.exceptions import BudgetExceeded
from sedi.stages.checks import check_models
from sedi.stages.decontaminate import check_seed_copies, decontaminator
from sedi.stages.embeddings import LazyEncoder
from sedi.stages.filtering import TaskFilter
from sedi.stages.generation import generate, plan_round
from sedi.stages.instances import mark_budget_stop, write_instances
from sedi.stages.repair import awaiting_repair, repair_outputs
from sedi.stages.resume import SEEDS_DIGEST, check_resume, check_seeds, seeds_digest
from sedi.stages.seedpool import apply_feedback, init_pool, record_pool_metrics, settle
from sedi.stages.steering import round_picker
from sedi.stages.stopping import marginal_stop
from sedi.stages.student import evaluate, example_losses, train
from sedi.stages.training_batches import compose_round_batches, record_round_metrics, sequential_batches
from sedi.store.candidates import kept_count, pooled_instructions, round_candidates, set_verdicts
from sedi.store.dataset import write_datasets
from sedi.store.db import RunStore
from sedi.store.rundir import check_run_dir, recorded_meta, run_dir_errors
from sedi.teacher.budget import Budget
from sedi.teacher.client import Endpoint, TeacherClient
from sedi.teacher.endpoint import LocalTeacher, openai_endpoints
from sedi.teacher.interrupt import finish_in_flight_on_interrupt

STAGES: tuple[RoundStage, ...] = ("filtered", "trained", "fed", "done")


@dataclass(frozen=True)
class RunOutcome:
    state: RunState
    message: str


@dataclass
class _Job:
    """What the rounds of one run share: its config, store, teacher client, inputs, filter and encoder."""

    config: SediConfig
    store: RunStore
    client: TeacherClient
    seeds: list[Task]
    heldout: list[Task]
    task_filter: TaskFilter
    encode: LazyEncoder
    progress: ProgressHook

    def reached(self, round_index: int, stage: RoundStage) -> bool:
        done = self.store.round_stage(round_index)
        return done is not None and STAGES.index(done) >= STAGES.index(stage)

    @contextmanager
    def timed(self, round_index: int, part: str) -> Iterator[None]:
        """Add the wall seconds of one part of a round to its ``seconds_<part>`` metric (summed over resumes),
        so the report and the benchmarks can say where a round's time goes."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.store.record_metrics(round_index, {f"seconds_{part}": time.monotonic() - started}, accumulate=True)


async def _collect(job: _Job, round_index: int) -> BudgetExceeded | None:
    """Generate, filter, repair lost outputs (generation.repair), write instances and compose batches; returns the
    budget refusal that cut it short."""
    config, store = job.config, job.store
    with job.timed(round_index, "generate"):
        planned = plan_round(config, round_picker(store, config, job.encode, job.seeds, round_index), round_index)
        result = await generate(job.client, store, config, round_index, planned, job.progress)
    with job.timed(round_index, "filter"):
        candidates = round_candidates(store, round_index)
        verdicts = job.task_filter.judge(candidates)
        set_verdicts(store, verdicts)
        job.task_filter.save()
    waiting = awaiting_repair(candidates, verdicts)
    pending = [c for c, (_, v) in zip(candidates, verdicts, strict=True) if v.verdict == "pending" and v.rule is None]
    stop = result.budget_stop
    if waiting and stop is None:
        with job.timed(round_index, "repair"):
            stop = await repair_outputs(job.client, store, config, round_index, waiting, job.progress)
    elif waiting:
        mark_budget_stop(store, [c for c, _ in waiting])
    if pending and stop is None:
        with job.timed(round_index, "instances"):
            unfinished = await write_instances(job.client, store, config, round_index, pending, job.progress)
        stop = None if unfinished is None else unfinished.budget_stop
    elif pending:
        mark_budget_stop(store, pending)
    with job.timed(round_index, "batches"):
        if config.method == "sedi":
            compose_round_batches(store, config, job.encode, round_index)
        else:
            sequential_batches(store, config, round_index)
    return stop


async def _round(job: _Job, round_index: int) -> BudgetExceeded | None:
    config, store, label = job.config, job.store, f"round {round_index + 1}"
    if not job.reached(round_index, "filtered"):
        stop = await _collect(job, round_index)
        if stop is not None:  # keep what was paid for visible; the round resumes when the budget allows
            record_round_metrics(store, config, job.encode, round_index, [t.instruction for t in job.seeds])
            write_datasets(store, store.run_dir)
            return stop
        store.mark_round(round_index, "filtered")
    if not job.reached(round_index, "trained"):
        job.progress(f"{label}: train", 0, 1)
        with job.timed(round_index, "train"):
            train(store, config, round_index, losses=config.method == "sedi" and config.feedback.promote == "top_k")
        crash_point(f"train:{round_index}")
        store.mark_round(round_index, "trained")
        job.progress(f"{label}: train", 1, 1)
    if config.method == "sedi" and not job.reached(round_index, "fed"):
        with job.timed(round_index, "feedback"):
            apply_feedback(store, config, round_index, example_losses(store, through_round=round_index))
    if (round_index + 1) % config.student.eval_every == 0 or round_index + 1 == config.run.max_rounds:
        _evaluate(job, round_index)
    with job.timed(round_index, "measure"):
        record_round_metrics(store, config, job.encode, round_index, [t.instruction for t in job.seeds])
        record_pool_metrics(store, round_index)
        write_datasets(store, store.run_dir)
    store.mark_round(round_index, "done")
    return None


def _evaluate(job: _Job, round_index: int) -> None:
    label = f"round {round_index + 1}: evaluate"
    job.progress(label, 0, 1)
    with job.timed(round_index, "evaluate"):
        evaluate(job.store, job.config, round_index, job.heldout)
    job.progress(label, 1, 1)


def _finish(job: _Job) -> None:
    """When the run ends (finished or out of budget): settle the last, partial feedback window and evaluate the
    latest trained student if its round skipped evaluation (student.eval_every)."""
    store = job.store
    last = store.last_round(("trained", "fed", "done"))
    if last is None:
        return
    if job.config.method == "sedi" and settle(store, job.config, last):
        record_pool_metrics(store, last)
        write_datasets(store, store.run_dir)
    if not store.has_metric(last, "heldout_loss") and job.config.student.heldout_size:
        _evaluate(job, last)


def _stop_rule(job: _Job) -> str | None:
    rule = job.config.run.stop_when
    if rule is None:
        return None
    return marginal_stop(rule, job.store.metric("heldout_loss"), job.store.metric("calls"))


async def _until_stop(job: _Job) -> RunOutcome:
    config, store = job.config, job.store
    for round_index in range(config.run.max_rounds):
        if job.reached(round_index, "done"):
            continue
        kept = kept_count(store)
        if kept >= config.generation.target_kept and not job.reached(round_index, "filtered"):
            return RunOutcome("finished", f"reached generation.target_kept ({kept} kept)")
        why = _stop_rule(job)
        if why is not None and not job.reached(round_index, "filtered"):
            return RunOutcome("finished", why)
        stop = await _round(job, round_index)
        if stop is not None:
            return RunOutcome("budget_exhausted", str(stop))
    return RunOutcome("finished", f"finished {config.run.max_rounds} rounds")


async def _rounds(
    config: SediConfig,
    store: RunStore,
    inputs: tuple[list[Task], list[Task]],
    endpoint: Callable[[], Endpoint | list[Endpoint]],
    progress: ProgressHook,
) -> RunOutcome:
    seeds, heldout = inputs
    init_pool(store, seeds)
    client = TeacherClient(config.teacher, store, Budget(config.budget, store.spent()), endpoint)
    rounds = range(config.run.max_rounds)
    unfiltered = next((r for r in rounds if store.round_stage(r) is None), config.run.max_rounds)
    encode = LazyEncoder(
        config.filter.embedding_model,
        store.run_dir / "embeddings.sqlite",
        config.filter.embedding_precision,
        config.filter.embedding_backend,
    )
    pool = [t.instruction for t in seeds] + pooled_instructions(store, unfiltered)
    task_filter = TaskFilter(config, pool, encode, store.run_dir / "index", decontaminator(config))
    job = _Job(config, store, client, seeds, heldout, task_filter, encode, progress)
    try:
        with finish_in_flight_on_interrupt(client):  # Ctrl-C: what was sent and paid for is kept
            outcome = await _until_stop(job)
        _finish(job)
        return outcome
    finally:
        await client.aclose()
        encode.close()


def check_inputs(
    config: SediConfig, source: str, run_dir: Path | None = None
) -> tuple[tuple[list[Task], list[Task]], list[Endpoint] | None]:
    """Fail on bad seeds, bad held-out tasks, missing models, a missing key, a broken run directory or a
    resume that would change the plan of started rounds, before anything is paid or the run directory is
    touched: every later failure of these would come after money was spent.

    Returns (human seed tasks, held-out tasks) and, for ``provider: openai``, the remote endpoints."""
    seeds, limit = load_seed_tasks(config.seeds.path, config.seeds.max_chars), config.seeds.max_chars
    heldout = load_heldout_tasks(config.seeds.heldout_path, limit) if config.student.heldout_size else []
    check_seed_copies(config, seeds, decontaminator(config))
    check_models(config, source)
    remote = None if config.teacher.provider == "local" else openai_endpoints(config.teacher, source)
    if run_dir is not None:
        recorded = check_run_dir(run_dir)
        if recorded is not None:
            check_resume(run_dir, resolved(config, remote), recorded)
            check_seeds(run_dir, config, seeds, recorded_meta(run_dir, SEEDS_DIGEST))
    return (seeds, heldout), remote


def resolved(config: SediConfig, remote: list[Endpoint] | None) -> SediConfig:
    """The config as it runs: with ``provider: openai`` and no ``teacher.base_url``, the URL actually used
    ($OPENAI_BASE_URL, else OpenAI's), so the run records which teacher answered and a resume pointed at
    another one is refused like a changed ``teacher.base_url`` (the response cache is keyed by request)."""
    if remote is None or config.teacher.base_url is not None or config.teacher.base_urls is not None:
        return config
    return config.model_copy(update={"teacher": config.teacher.model_copy(update={"base_url": remote[0].base_url})})


def _fixed(endpoints: list[Endpoint] | None) -> Callable[[], list[Endpoint]]:
    assert endpoints is not None
    return lambda: endpoints


def run(
    config: SediConfig,
    run_dir: Path,
    source: str,
    progress: ProgressHook | None = None,
    on_start: Callable[[], None] | None = None,
    shared_teacher: Callable[[], Endpoint] | None = None,
) -> RunOutcome:
    """Run (or resume) the job configured by ``config`` in ``run_dir``; ``on_start`` runs once the
    inputs are valid, before the run directory is touched. ``shared_teacher`` (``provider: local`` only, see
    :mod:`experiment.parallel`): the endpoint of an embedded server already serving this config's teacher, used instead
    of starting one; an argument, not a setting, so no user config or environment can point a run elsewhere."""
    if shared_teacher is not None and config.teacher.provider != "local":
        raise ValueError("shared_teacher is for teacher.provider: local runs only")
    inputs, remote = check_inputs(config, source, run_dir)
    config = resolved(config, remote)
    if on_start is not None:
        on_start()
    local = remote is None
    with run_dir_errors(run_dir), RunStore(run_dir) as store:
        body = dump_config(config)
        store.record_config(config.digest(), body)
        store.set_meta(SEEDS_DIGEST, seeds_digest(inputs[0]))
        fsync_write(run_dir / "config.yaml", body)
        store.set_state("running")
        store.set_meta("outcome", "")
        server = LocalTeacher(config.teacher, run_dir / "logs") if local and shared_teacher is None else None
        factory: Callable[[], Endpoint | list[Endpoint]] = shared_teacher or server or _fixed(remote)
        started = time.monotonic()
        try:
            outcome = asyncio.run(_rounds(config, store, inputs, factory, progress or (lambda *_: None)))
        except KeyboardInterrupt:
            store.set_state("interrupted")
            raise
        except Exception:
            store.set_state("failed")
            raise
        finally:
            if server is not None:
                server.stop()
            spent = float(store.get_meta("wall_seconds", "0") or 0)
            store.set_meta("wall_seconds", f"{spent + time.monotonic() - started:.1f}")
        store.set_meta("outcome", outcome.message)  # why it ended, for status and the report
        store.set_state(outcome.state)
        return outcome
