"""One run, top to bottom: open the run directory, then rounds until a stop condition.

A round: generate (plan, send, parse, store) -> filter (parse problems, heuristics, similarity) ->
instances (instruction-only prompts) -> export the datasets. A finished round is never redone; an
unfinished one is replayed from the start, where the response cache answers every request already
paid for and the filters recompute the same verdicts from the same inputs. Training and feedback
plug in after the filter for ``method: sedi``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sedi.batching import compose_round_batches, record_round_metrics
from sedi.budget import Budget
from sedi.candidates import kept_ids, pooled_instructions, round_candidates, set_verdicts
from sedi.config import SediConfig, dump_config
from sedi.embeddings import LazyEncoder
from sedi.endpoint import LocalTeacher, openai_endpoint
from sedi.exceptions import BudgetExceeded
from sedi.export import kept_tasks, write_datasets
from sedi.filtering import TaskFilter
from sedi.generation import ProgressHook, generate, plan_round
from sedi.instances import mark_budget_stop, write_instances
from sedi.store import RunStore, fsync_write
from sedi.tasks import Task, load_seed_tasks
from sedi.teacher import Endpoint, TeacherClient

DONE = "done"


@dataclass(frozen=True)
class RunOutcome:
    state: str
    message: str


async def _round(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    human: list[Task],
    task_filter: TaskFilter,
    encode: LazyEncoder,
    round_index: int,
    progress: ProgressHook,
) -> BudgetExceeded | None:
    """One round; returns the budget refusal that cut it short, if any."""
    planned = plan_round(config, human, kept_tasks(store, before_round=round_index), round_index)
    result = await generate(client, store, config, round_index, planned, progress)
    candidates = round_candidates(store, round_index)
    verdicts = task_filter.judge(candidates)
    set_verdicts(store, verdicts)
    pending = [c for c, (_, v) in zip(candidates, verdicts, strict=True) if v.verdict == "pending"]
    stop = result.budget_stop
    if pending and stop is None:
        unfinished = await write_instances(client, store, config, round_index, pending, progress)
        stop = None if unfinished is None else unfinished.budget_stop
    elif pending:
        mark_budget_stop(store, pending)
    if config.method == "sedi":
        compose_round_batches(store, config, encode, round_index)
    record_round_metrics(store, config, encode, round_index, [t.instruction for t in human])
    write_datasets(store, store.run_dir)
    return stop


async def _rounds(
    config: SediConfig, store: RunStore, human: list[Task], endpoint: Callable[[], Endpoint], progress: ProgressHook
) -> RunOutcome:
    budget = Budget(config.budget, store.spent())
    client = TeacherClient(config.teacher, store, budget, endpoint)
    done = store.finished_rounds()
    first = next((r for r in range(config.run.max_rounds) if r not in done), config.run.max_rounds)
    encode = LazyEncoder(config.filter.embedding_model, store.run_dir / "embeddings.sqlite")
    task_filter = TaskFilter(config, [t.instruction for t in human] + pooled_instructions(store, first), encode)
    try:
        for round_index in range(first, config.run.max_rounds):
            kept = len(kept_ids(store))
            if kept >= config.generation.target_kept:
                return RunOutcome("finished", f"reached generation.target_kept ({kept} kept)")
            stop = await _round(client, store, config, human, task_filter, encode, round_index, progress)
            if stop is not None:
                return RunOutcome("budget_exhausted", str(stop))
            store.mark_round(round_index, DONE)
        return RunOutcome("finished", f"finished {config.run.max_rounds} rounds")
    finally:
        await client.aclose()
        encode.close()


def check_inputs(config: SediConfig, source: str) -> tuple[list[Task], Endpoint | None]:
    """Fail on bad seeds or a missing key before the run directory is touched.

    Returns the human seed tasks and, for ``provider: openai``, the remote endpoint."""
    seeds = load_seed_tasks(config.seeds.path)
    return seeds, None if config.teacher.provider == "local" else openai_endpoint(config.teacher, source)


def _fixed(endpoint: Endpoint | None) -> Callable[[], Endpoint]:
    assert endpoint is not None
    return lambda: endpoint


def run(
    config: SediConfig,
    run_dir: Path,
    source: str,
    progress: ProgressHook | None = None,
    on_start: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run (or resume) the job configured by ``config`` in ``run_dir``; ``on_start`` runs once the
    inputs are valid, before the run directory is touched."""
    human, remote = check_inputs(config, source)
    if on_start is not None:
        on_start()
    local = remote is None
    with RunStore(run_dir) as store:
        body = dump_config(config)
        store.record_config(config.digest(), body)
        fsync_write(run_dir / "config.yaml", body)
        store.set_state("running")
        server = LocalTeacher(config.teacher, run_dir / "logs") if local else None
        factory: Callable[[], Endpoint] = server if server is not None else _fixed(remote)
        try:
            outcome = asyncio.run(_rounds(config, store, human, factory, progress or (lambda *_: None)))
        except KeyboardInterrupt:
            store.set_state("interrupted")
            raise
        except Exception:
            store.set_state("failed")
            raise
        finally:
            if server is not None:
                server.stop()
        store.set_state(outcome.state)
        return outcome
