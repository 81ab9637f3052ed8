"""The generate stage: plan a round's requests, send them, parse and store every answer on arrival.

A round is planned deterministically from ``run.seed``, the round number and the pools, so a rerun
asks for exactly the same requests and the response cache answers those already paid for. Each request has a
shape (``generation.shaping``, see :mod:`sedi.stages.steering`): with ``fixed`` every request is what it was before
shapes existed (same request keys); a learned shape sets the request's ``tasks_per_call`` and ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any, NamedTuple

from sedi.base.faults import crash_point
from sedi.base.vocabulary import ProgressHook
from sedi.config.model import SamplingConfig, SediConfig
from sedi.config.seeds import Task
from sedi.stages.parsing import parse_generated
from sedi.stages.prompts import chat_messages, completion_prompt
from sedi.store.candidates import PlannedRequest, add_candidates, record_parse_error, record_requests
from sedi.store.db import RunStore
from sedi.teacher.client import CompletedRequests, TeacherClient, TeacherRequest, TeacherResponse

if TYPE_CHECKING:  # the picker's module loads numpy and the embedding clusters; planning needs only its type
    from sedi.stages.steering import Picker


def request_seed(run_seed: int, sample_index: int) -> int:
    digest = hashlib.sha256(f"{run_seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class PlannedCall(NamedTuple):
    """One planned generation request: the request, the tasks its prompt shows, and its shape's name."""

    request: TeacherRequest
    context: list[Task]
    shape: str


def sampled(sampling: SamplingConfig) -> dict[str, Any]:
    """A generation request's sampling fields (``generation.sampling``), as :class:`TeacherRequest` takes them."""
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stop": tuple(sampling.stop),
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }


def plan_round(config: SediConfig, pick: Picker, round_index: int) -> list[PlannedCall]:
    """The round's requests with their in-context tasks and shapes: a pure function of the config, the in-context
    picker (see sedi.stages.steering) and the round number."""
    gen, sampling = config.generation, config.generation.sampling
    chat = config.teacher.mode == "chat"
    planned = []
    for slot in range(gen.calls_per_round):
        sample_index = round_index * gen.calls_per_round + slot
        rng = random.Random(f"{config.run.seed}:{sample_index}")
        chosen = pick(sample_index, rng)
        examples, shape = chosen.tasks, chosen.shape
        n_new = gen.tasks_per_call if chosen.fixed else shape.tasks_per_call
        request = TeacherRequest(
            prompt=None if chat else completion_prompt(examples, gen.prompt_style),
            messages=chat_messages(examples, n_new, gen.prompt_style) if chat else None,
            max_tokens=sampling.max_tokens if chosen.fixed else shape.max_tokens,
            **sampled(sampling),
            seed=request_seed(config.run.seed, sample_index),
            sample_index=sample_index,
            tag=f"round {round_index} slot {slot}",
        )
        planned.append(PlannedCall(request, examples, shape.name))
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
    planned: list[PlannedCall],
    progress: ProgressHook,
) -> CompletedRequests:
    """Send the round's requests; every response is parsed and stored the moment it arrives."""
    model, mode = config.teacher.model, config.teacher.mode
    record_requests(
        store,
        [
            PlannedRequest(
                r.key(model, mode), round_index, "tasks", r.sample_index, context=tuple(t.id for t in ctx), shape=shape
            )
            for r, ctx, shape in planned
        ],
    )
    stage, done = f"round {round_index + 1}: generate", 0

    def on_done(index: int, response: TeacherResponse) -> None:
        nonlocal done
        done += 1
        store_response(store, config, round_index, planned[index].request.sample_index, response)
        crash_point(f"generate:{round_index}")
        progress(stage, done, len(planned))

    progress(stage, 0, len(planned))
    return await client.complete_all([p.request for p in planned], on_done)
