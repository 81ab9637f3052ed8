"""One run, top to bottom: open the run directory, then rounds of generation until a stop condition.

Every round is planned deterministically from ``run.seed`` and the round number, so a rerun of the
same command asks for exactly the same requests and the response cache answers those already paid
for. Stages still to come (filtering, batches, training, feedback) plug in after ``generate``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sedi.budget import Budget
from sedi.config import SediConfig, dump_config
from sedi.endpoint import LocalTeacher, openai_endpoint
from sedi.prompts import chat_messages, completion_prompt, parse_numbered_tasks, sample_in_context
from sedi.store import RunStore, fsync_write
from sedi.tasks import Task, load_seed_tasks
from sedi.teacher import BatchResult, Endpoint, TeacherClient, TeacherRequest, TeacherResponse

# Until the filters land (Self-Instruct issue), parsed candidates carry this verdict.
UNFILTERED = "unfiltered"


@dataclass(frozen=True)
class RunOutcome:
    state: str
    message: str


ProgressHook = Callable[[str, int, int], None]  # (stage, done, total)


def _request_seed(run_seed: int, sample_index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_round(config: SediConfig, human: list[Task], machine: list[Task], round_index: int) -> list[TeacherRequest]:
    """The round's requests, a pure function of the config, the pools and the round number."""
    gen, sampling = config.generation, config.generation.sampling
    requests = []
    for slot in range(gen.calls_per_round):
        sample_index = round_index * gen.calls_per_round + slot
        rng = random.Random(f"{config.run.seed}:{sample_index}")
        examples = sample_in_context(human, machine, gen.human_in_context, gen.machine_in_context, rng)
        chat = config.teacher.mode == "chat"
        requests.append(
            TeacherRequest(
                prompt=None if chat else completion_prompt(examples),
                messages=chat_messages(examples, n_new=8) if chat else None,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=tuple(sampling.stop),
                presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty,
                seed=_request_seed(config.run.seed, sample_index),
                sample_index=sample_index,
                tag=f"round {round_index} slot {slot}",
            )
        )
    return requests


def _store_candidates(store: RunStore, config: SediConfig, round_index: int, response: TeacherResponse) -> None:
    parsed = parse_numbered_tasks(
        response.text, starts_inside_item=config.teacher.mode == "completion", truncated=response.truncated
    )
    items = [(p.position, p.instruction, "", "") for p in parsed]
    store.add_candidates(response.request_key, round_index, items, UNFILTERED)


async def _generate(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    round_index: int,
    requests: list[TeacherRequest],
    progress: ProgressHook,
) -> BatchResult:
    """Send the round's requests; every response is parsed and stored the moment it arrives."""
    stage = f"round {round_index + 1}: generate"
    done = 0

    def on_done(_: int, response: TeacherResponse) -> None:
        nonlocal done
        done += 1
        _store_candidates(store, config, round_index, response)
        progress(stage, done, len(requests))

    progress(stage, 0, len(requests))
    return await client.complete_all(requests, on_done)


async def _rounds(
    config: SediConfig, store: RunStore, human: list[Task], endpoint: Callable[[], Endpoint], progress: ProgressHook
) -> RunOutcome:
    budget = Budget(config.budget, store.spent())
    client = TeacherClient(config.teacher, store, budget, endpoint)
    try:
        for round_index in range(config.run.max_rounds):
            requests = plan_round(config, human, [], round_index)
            result = await _generate(client, store, config, round_index, requests, progress)
            if result.budget_stop is not None:
                return RunOutcome("budget_exhausted", str(result.budget_stop))
            store.mark_round(round_index, "generated")
        return RunOutcome("finished", f"finished {config.run.max_rounds} rounds")
    finally:
        await client.aclose()


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
