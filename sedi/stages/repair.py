"""Output repair (``generation.repair: batched``, alpaca-style generation): ask the teacher for the outputs that
generation lost.

On the bundled teacher 29-35% of alpaca candidates come back without an output and 9-14% are cut by
``max_tokens`` inside their last output, many with a good instruction: paid text the filters threw away whole.
The filter stage lets such a candidate through its instruction rules (it joins the similarity pool like any passing
instruction) and leaves it ``pending`` with rule ``awaiting_repair``; this stage then asks for the outputs of
``generation.repair_per_call`` of them per request, in plan order, and judges each answer by the same output rules
as any generated task (:func:`sedi.stages.filtering.output_verdict`).
A repaired output replaces the candidate's ``output``
(the parsed one is kept in ``original_output``, which also tells repaired tasks apart); a candidate whose answer is
missing stays rejected by its parse problem's rule (``missing_output`` or ``truncated``), with a detail saying
repair was tried.

Repair requests are teacher calls like any other (budget, ledger, response cache, rate limits; request kind
``repair``). Each one is a pure function of its candidates, which the filter recomputes identically on resume, so
a resumed round asks the same requests and the cache answers those already paid for. When the budget refuses one,
its candidates and those after it wait as ``pending`` with rule ``budget_stop``, as in the instance stage, and the
round stops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sedi.base.faults import crash_point
from sedi.base.vocabulary import ProgressHook
from sedi.config.model import SediConfig
from sedi.exceptions import BudgetExceeded
from sedi.stages.filtering import AWAITING_REPAIR, REPAIRABLE, output_verdict
from sedi.stages.instances import mark_budget_stop
from sedi.stages.parsing import parse_repair_answers
from sedi.stages.prompts import repair_example_texts, repair_messages, repair_prompt
from sedi.store.candidates import (
    Candidate,
    PlannedRequest,
    Verdict,
    machine_task_id,
    record_requests,
    set_repaired,
    set_verdicts,
)
from sedi.store.db import RunStore
from sedi.teacher.client import TeacherClient, TeacherRequest, TeacherResponse

REPEATED_ANSWER = "repeated_answer"
Waiting = tuple[Candidate, Verdict]  # a candidate awaiting repair, with the filter's verdict (its detail)


def awaiting_repair(candidates: Sequence[Candidate], verdicts: Sequence[tuple[int, Verdict]]) -> list[Waiting]:
    """The candidates the filter left waiting for repair, in plan order, with their verdicts."""
    return [(c, v) for c, (_, v) in zip(candidates, verdicts, strict=True) if v.rule == AWAITING_REPAIR]


def answer_tokens(config: SediConfig) -> int:
    """Completion tokens allowed per asked output. A generation answer of ``sampling.max_tokens`` holds about 4
    whole tasks on the bundled teacher (see GenerationConfig.prompt_style), so a quarter of it is room for one
    output; the budget reserves it, and a longer answer is cut and its last output stays rejected."""
    return max(32, config.generation.sampling.max_tokens // 4)


def repair_request(config: SediConfig, group: Sequence[Candidate]) -> TeacherRequest:
    """One request for the outputs of ``group``: a completion document ending in an open 'Answer 1:', or a chat
    request for JSON lines. Deterministic in the group (same candidates, same request, same cache key)."""
    tasks = [(c.instruction, c.input) for c in group]
    chat = config.teacher.mode == "chat"
    return TeacherRequest(
        prompt=None if chat else repair_prompt(tasks),
        messages=repair_messages(tasks) if chat else None,
        max_tokens=len(group) * answer_tokens(config),
        # instances.temperature: outputs for given instructions, as instance requests write (greedy decoding
        # echoed '<noinput>' as the answer on the bundled teacher; see InstanceConfig.temperature).
        temperature=config.instances.temperature,
        top_p=1.0,
        stop=() if chat else ("\nTasks:", f"Answer {len(group) + 1}:"),
        seed=config.run.seed,
        tag="repair",
    )


async def repair_outputs(
    client: TeacherClient,
    store: RunStore,
    config: SediConfig,
    round_index: int,
    waiting: Sequence[Waiting],
    progress: ProgressHook,
) -> BudgetExceeded | None:
    """Ask for the outputs of ``waiting`` candidates and judge them; returns the budget refusal, if any (the
    candidates of unanswered requests stay 'pending' with rule ``budget_stop``)."""
    size = config.generation.repair_per_call
    groups = [list(waiting[start : start + size]) for start in range(0, len(waiting), size)]
    requests = [repair_request(config, [c for c, _ in group]) for group in groups]
    model, mode = config.teacher.model, config.teacher.mode
    record_requests(
        store,
        [
            PlannedRequest(
                r.key(model, mode),
                round_index,
                "repair",
                0,
                candidate_id=group[0][0].id,
                context=tuple(machine_task_id(c.id) for c, _ in group),
            )
            for group, r in zip(groups, requests, strict=True)
        ],
    )
    label, done = f"round {round_index + 1}: repair", 0

    def on_done(_: int, __: TeacherResponse) -> None:
        nonlocal done
        done += 1
        crash_point(f"repair:{round_index}")  # after a repair answer is cached, before any is judged
        progress(label, done, len(requests))

    progress(label, 0, len(requests))
    result = await client.complete_all(requests, on_done)
    unanswered: list[Candidate] = []
    for group, response in zip(groups, result.responses, strict=True):
        if response is None:
            unanswered.extend(c for c, _ in group)
        else:
            _judge(store, config, group, response)
    mark_budget_stop(store, unanswered)
    return result.budget_stop


def _judge(store: RunStore, config: SediConfig, group: Sequence[Waiting], response: TeacherResponse) -> None:
    answers = parse_repair_answers(
        response.text,
        len(group),
        starts_inside_item=config.teacher.mode == "completion",
        truncated=response.truncated,
    )
    repaired: list[tuple[int, str]] = []
    verdicts: list[tuple[int, Verdict]] = []
    # One answer given to several different tasks of a request is the teacher copying, not answering: the 270M
    # teacher answered all 8 tasks of one repair request with "1000 words" (measured), which every per-task output
    # rule passes. Such answers are rejected for every task that got them.
    shared = Counter(_normal(text) for text in answers.values())
    for number, (candidate, waited) in enumerate(group, start=1):
        detail = dict(waited.detail or {})
        output = answers.get(number)
        if output is None:
            rule = REPAIRABLE[candidate.problem or ""]
            verdicts.append((candidate.id, Verdict("rejected", rule, {**detail, "repair": "no answer"}, pooled=True)))
            continue
        repaired.append((candidate.id, output))
        judged = output_verdict(candidate.input, output, {**detail, "repair": "answered"}, repair_example_texts())
        if judged.verdict == "kept" and shared[_normal(output)] > 1:
            judged = Verdict("rejected", REPEATED_ANSWER, judged.detail, pooled=True)
        verdicts.append((candidate.id, judged))
    set_repaired(store, repaired)
    set_verdicts(store, verdicts)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())
