"""The generate stage: plan a round's requests, send them, parse and store every answer on arrival.

A round is planned deterministically from ``run.seed``, the round number and the pools, so a rerun
asks for exactly the same requests and the response cache answers those already paid for.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from sedi._faults import crash_point
from sedi._types import ProgressHook
from sedi.candidates import PlannedRequest, add_candidates, record_parse_error, record_requests
from sedi.config import SediConfig
from sedi.parsing import parse_generated
from sedi.prompts import chat_messages, completion_prompt
from sedi.store import RunStore
from sedi.tasks import Task
from sedi.teacher import BatchResult, TeacherClient, TeacherRequest, TeacherResponse


def request_seed(run_seed: int, sample_index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_round(
    config: SediConfig, pick: Callable[[int, random.Random], list[Task]], round_index: int
) -> list[tuple[TeacherRequest, list[Task]]]:
    """The round's requests with their in-context tasks: a pure function of the config, the in-context
    picker (see sedi.steering) and the round number."""
    gen, sampling = config.generation, config.generation.sampling
    chat = config.teacher.mode == "chat"
    planned = []
    for slot in range(gen.calls_per_round):
        sample_index = round_index * gen.calls_per_round + slot
        rng = random.Random(f"{config.run.seed}:{sample_index}")
        examples = pick(sample_index, rng)
        request = TeacherRequest(
            prompt=None if chat else completion_prompt(examples, gen.prompt_style),
            messages=chat_messages(examples, gen.tasks_per_call, gen.prompt_style) if chat else None,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=tuple(sampling.stop),
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            seed=request_seed(config.run.seed, sample_index),
            sample_index=sample_index,
            tag=f"round {round_index} slot {slot}",
        )
        planned.append((request, examples))
    return planned


def store_response(
    store: RunStore, config: SediConfig, round_index: int, sample_index: int, response: TeacherResponse
) -> int:
    """Parse one answer and store its items; an answer with no task in it is recorded with the reason."""
    parsed = parse_generated(
        response.text,
        style=config.generation.prompt_style,
        starts_inside_item=config.teacher.mode == "completion",
        truncated=response.truncated,
    )
    items = [(p.position, p.instruction, p.input, p.output, p.problem) for p in parsed]
    add_candidates(store, response.request_key, sample_index, round_index, items)
    if not parsed:
        reason = "empty answer" if not response.text.strip() else "no task found in the answer"
        record_parse_error(store, response.request_key, reason)
    return len(items)


async def generate(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    round_index: int,
    planned: list[tuple[TeacherRequest, list[Task]]],
    progress: ProgressHook,
) -> BatchResult:
    """Send the round's requests; every response is parsed and stored the moment it arrives."""
    model, mode = config.teacher.model, config.teacher.mode
    record_requests(
        store,
        [
            PlannedRequest(r.key(model, mode), round_index, "tasks", r.sample_index, context=tuple(t.id for t in ctx))
            for r, ctx in planned
        ],
    )
    stage, done = f"round {round_index + 1}: generate", 0

    def on_done(index: int, response: TeacherResponse) -> None:
        nonlocal done
        done += 1
        store_response(store, config, round_index, planned[index][0].sample_index, response)
        crash_point(f"generate:{round_index}")
        progress(stage, done, len(planned))

    progress(stage, 0, len(planned))
    return await client.complete_all([r for r, _ in planned], on_done)
