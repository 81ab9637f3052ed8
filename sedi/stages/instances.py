"""Instances for instruction-only tasks (``generation.prompt_style: self-instruct``).

As the original: ask whether each passing instruction is a classification task, then ask for its
instances, output-first for classification tasks (so the labels vary) and input-first otherwise,
and apply the instance post-filters. A task with no valid instance is rejected, but its instruction
stays in the similarity pool. Requests are content-addressed like every other, so a resumed run
answers them from the cache.

Tasks go through both calls a chunk at a time (``teacher.concurrency`` tasks: classify the chunk, then
write its instances), not stage by stage as the original did. Each request is the same either way, so
with budget to spare the result is identical; when the budget runs out, the tasks paid for so far are
finished instead of every task holding a paid classification and no instances (measured: 20 calls left
the stage-by-stage pipeline with 0 kept tasks, all 15 calls after generation spent on classification).
"""

from __future__ import annotations

from collections.abc import Sequence

from diversity.instance_filters import filter_instances
from sedi.base.vocabulary import ProgressHook, RequestKind
from sedi.config.model import SediConfig
from sedi.stages.parsing import parse_classification, parse_instances
from sedi.stages.prompts import as_chat, classify_prompt, example_texts, instance_prompt
from sedi.store.candidates import Candidate, PlannedRequest, Verdict, record_requests, set_instances, set_verdicts
from sedi.store.db import RunStore
from sedi.teacher.client import CompletedRequests, TeacherClient, TeacherRequest, TeacherResponse

BUDGET_STOP = "budget_stop"


def _request(config: SediConfig, prompt: str, max_tokens: int, stop: tuple[str, ...], tag: str) -> TeacherRequest:
    chat = config.teacher.mode == "chat"
    return TeacherRequest(
        prompt=None if chat else prompt,
        messages=as_chat(prompt) if chat else None,
        max_tokens=max_tokens,
        temperature=config.instances.temperature,
        top_p=1.0,
        stop=stop,
        seed=config.run.seed,
        tag=tag,
    )


def classify_request(config: SediConfig, instruction: str) -> TeacherRequest:
    # Three tokens are enough for 'Yes' or 'No' (the original used the same limit).
    return _request(config, classify_prompt(instruction), 3, ("\n",), "classify")


def instances_request(config: SediConfig, instruction: str, output_first: bool) -> TeacherRequest:
    stop = (f"Example {config.instances.max_per_task + 1}", "\nTask:")
    return _request(config, instance_prompt(instruction, output_first), config.instances.max_tokens, stop, "instances")


class _Counter:
    """Progress of one stage across chunks: (label, done, total) for the progress hook."""

    def __init__(self, progress: ProgressHook, label: str, total: int) -> None:
        self.progress, self.label, self.total, self.done = progress, label, total, 0
        progress(label, 0, total)

    def tick(self, _: int = 0, __: TeacherResponse | None = None) -> None:
        self.done += 1
        self.progress(self.label, self.done, self.total)


async def _send(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    round_index: int,
    kind: RequestKind,
    pending: Sequence[Candidate],
    requests: Sequence[TeacherRequest],
    counter: _Counter,
) -> CompletedRequests:
    model, mode = config.teacher.model, config.teacher.mode
    record_requests(
        store,
        [
            PlannedRequest(r.key(model, mode), round_index, kind, 0, candidate_id=c.id)
            for c, r in zip(pending, requests, strict=True)
        ],
    )
    return await client.complete_all(requests, counter.tick)


async def write_instances(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    round_index: int,
    pending: Sequence[Candidate],
    progress: ProgressHook,
) -> CompletedRequests | None:
    """Classify and write instances for ``pending`` candidates, a chunk at a time; returns the batch that hit
    the budget, if any (its unanswered candidates, and every later one, stay 'pending' with rule
    ``budget_stop``)."""
    if not pending:
        return None
    label = f"round {round_index + 1}: "
    counters = (
        _Counter(progress, label + "classify", len(pending)) if config.instances.classify else None,
        _Counter(progress, label + "instances", len(pending)),
    )
    # Chunks bound what is in flight and what one budget refusal leaves unsent. With teacher.batch_api each chunk is
    # one batch job that may take hours, so the round's candidates go as one job (classify, then instances).
    step = len(pending) if config.teacher.batch_api else config.teacher.concurrency
    for start in range(0, len(pending), step):
        stopped = await _chunk(client, store, config, round_index, pending[start : start + step], counters)
        if stopped is not None:
            mark_budget_stop(store, pending[start + step :])
            return stopped
    return None


async def _chunk(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    round_index: int,
    pending: Sequence[Candidate],
    counters: tuple[_Counter | None, _Counter],
) -> CompletedRequests | None:
    labels: list[bool | None] = [None] * len(pending)
    classify, write = counters
    if classify is not None:
        asked = [classify_request(config, c.instruction) for c in pending]
        result = await _send(client, store, config, round_index, "classify", pending, asked, classify)
        if result.budget_stop is not None:
            mark_budget_stop(store, pending)
            return result
        labels = [None if r is None else parse_classification(r.text) for r in result.responses]
    requests = [instances_request(config, c.instruction, bool(label)) for c, label in zip(pending, labels, strict=True)]
    result = await _send(client, store, config, round_index, "instances", pending, requests, write)
    verdicts: list[tuple[int, Verdict]] = []
    unanswered: list[Candidate] = []
    for candidate, label, response in zip(pending, labels, result.responses, strict=True):
        if response is None:
            unanswered.append(candidate)
            continue
        parsed = parse_instances(
            response.text,
            output_first=bool(label),
            starts_inside_item=config.teacher.mode == "completion",
            truncated=response.truncated,
        )
        pairs = [(p.input, p.output) for p in parsed]
        outcome = filter_instances(pairs, config.instances.max_per_task, example_texts(bool(label)))
        set_instances(store, candidate.id, outcome.kept, label)
        detail: dict[str, object] = {"instances_parsed": len(parsed), "classification": label}
        verdicts.append(
            (candidate.id, Verdict("kept" if outcome.kept else "rejected", outcome.task_rule, detail, pooled=True))
        )
    set_verdicts(store, verdicts)
    mark_budget_stop(store, unanswered)
    return result if result.budget_stop is not None else None


def mark_budget_stop(store: RunStore, pending: Sequence[Candidate]) -> None:
    set_verdicts(store, [(c.id, Verdict("pending", BUDGET_STOP, None, pooled=True)) for c in pending])
