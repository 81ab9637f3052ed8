"""Output repair (generation.repair: batched): tasks generated without an output, or cut inside it, get their output
from one batched request per generation.repair_per_call tasks; those answers pass the same output rules, count as
calls, stay under the budget, come from the cache on resume, and are never paid twice after a SIGKILL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sedi.config.model import SediConfig
from sedi.stages.filtering import AWAITING_REPAIR, TaskFilter
from sedi.stages.parsing import NO_OUTPUT, TRUNCATED, TRUNCATED_OUTPUT, parse_repair_answers, parse_task_blocks
from sedi.stages.prompts import repair_messages, repair_prompt
from sedi.store.candidates import Candidate
from tests.helpers import ledger, rows, scripted_args, sedi, status
from tests.scripted_teacher import ScriptedEngine
from tests.servers import Served, serve_app

REPAIR = ("--set", "generation.repair=batched", "--set", "generation.repair_per_call=3")
ONE_ROUND = ("--set", "run.max_rounds=1", "--set", "student.heldout_size=0")

# --- the parser: which cut items can be repaired --------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        ("Output: The capital of France is", TRUNCATED_OUTPUT),  # cut inside the output
        ("Output:", TRUNCATED_OUTPUT),  # cut right after the field name
        ("Input: <noinput>\n", TRUNCATED_OUTPUT),  # a whole no-input marker, then the cut
        ("Input: The quick brown", TRUNCATED),  # cut inside a real input: it may be incomplete
        ("", TRUNCATED),  # cut inside the instruction
    ],
)
def test_a_cut_item_is_repairable_only_when_its_instruction_and_input_are_whole(tail: str, problem: str) -> None:
    text = " Name a colour.\nInput: <noinput>\nOutput: Red.\n\nTask 3\nInstruction: Name the capital of France.\n"
    parsed = parse_task_blocks(text + tail, starts_inside_item=True, truncated=True)
    assert [p.problem for p in parsed] == [None, problem]
    assert parsed[1].instruction.startswith("Name the capital of France.")


def test_an_item_without_output_is_missing_output_and_an_uncut_answer_has_no_truncated_item() -> None:
    text = " Name a colour.\nInput: <noinput>\nOutput:\n\nTask 3\nInstruction: List two fruits.\nInput: <noinput>\n"
    assert [p.problem for p in parse_task_blocks(text, starts_inside_item=True, truncated=False)] == [NO_OUTPUT] * 2


# --- prompts and answers of real shapes --------------------------------------------------------------


def test_the_completion_prompt_numbers_the_tasks_and_opens_the_first_answer() -> None:
    prompt = repair_prompt([("List two fruits.", ""), ("Translate to French.", "Good morning")])
    asked = prompt.rsplit("Tasks:\n", 1)[1]
    assert asked.startswith("Task 1\nInstruction: List two fruits.\nInput: <noinput>\nTask 2\n")
    assert "Instruction: Translate to French.\nInput: Good morning" in asked
    assert prompt.endswith("\n\nAnswers:\nAnswer 1:") and prompt.count("Answer 1:") == 2  # its example, then ours
    user = repair_messages([("List two fruits.", "")])[1][1]
    assert "these 1 tasks" in user and '{"task": 1, "output": "..."}' in user


GEMMA_TEXT = (
    " Nicolas Cage, Walt Disney, and Bill Gates\nAnswer 2: Christian Dior, Mad Men, and Jennifer Lawrence\n"
    "Answer 3: Jimmy Page, Kate Moss, and Elton John\n"
)
GEMMA_ANSWERS = {
    1: "Nicolas Cage, Walt Disney, and Bill Gates",
    2: "Christian Dior, Mad Men, and Jennifer Lawrence",
    3: "Jimmy Page, Kate Moss, and Elton John",
}


@pytest.mark.parametrize(
    ("text", "completion", "truncated", "expected"),
    [
        # a base model continuing 'Answer 1:', then writing on into a new document
        (" Pears.\nAnswer 2: Bonjour.\n\nTasks:\nTask 1\nInstruction: x", True, False, {1: "Pears.", 2: "Bonjour."}),
        # a multi-line answer, a skipped number, and an answer beyond the tasks asked
        (" Step one.\nStep two.\nAnswer 3: Blue\nAnswer 4: extra", True, False, {1: "Step one.\nStep two.", 3: "Blue"}),
        # what the bundled 270M base model wrote for 3 tasks (recorded): numbered as asked, whatever the content
        (GEMMA_TEXT, True, False, GEMMA_ANSWERS),
        # the limit cut the last answer: it is dropped
        (" Apples.\nAnswer 2: Bonjour, je m'app", True, True, {1: "Apples."}),
        # an echoed no-input marker and an empty answer are no answers
        (" <noinput>\nAnswer 2:\nAnswer 3: Fine.", True, False, {3: "Fine."}),
        # chat: JSON lines, numbers as strings, a fenced block, markdown answers
        ('```json\n{"task": 1, "output": "A."}\n{"task": "2", "output": "B."}\n```', False, False, {1: "A.", 2: "B."}),
        ('{"task": 2, "output": "B."}\n{"task": 1, "output": "A."}\n{"task": 3, "ou', False, True, {1: "A.", 2: "B."}),
        ("**Answer 1:** Apples.\n**Answer 2:** Bonjour.", False, False, {1: "Apples.", 2: "Bonjour."}),
        ("I cannot help with that.", False, False, {}),
    ],
)  # fmt: skip
def test_answers_of_real_shapes(text: str, completion: bool, truncated: bool, expected: dict[int, str]) -> None:
    assert parse_repair_answers(text, 3, starts_inside_item=completion, truncated=truncated) == expected


# --- the filter: who waits for repair ------------------------------------------------------------------


def _candidate(id_: int, instruction: str, problem: str | None, output: str = "") -> Candidate:
    return Candidate(id_, "k", id_, 0, instruction, "", output, problem, False)


def test_only_a_good_instruction_that_lost_its_output_waits_and_it_joins_the_pool() -> None:
    on = SediConfig.model_validate({"method": "self-instruct", "generation": {"repair": "batched"}})
    candidates = [
        _candidate(0, "Describe the smell of rain after a long drought.", NO_OUTPUT),
        _candidate(1, "Explain why the sky looks blue during the day.", TRUNCATED_OUTPUT, "Because"),
        _candidate(2, "Describe the smell of rain after a long drought.", NO_OUTPUT),  # a copy of the first
        _candidate(3, "Hi.", NO_OUTPUT),  # too short: the heuristics reject it
        _candidate(4, "Summarize the plot of a novel you like.", TRUNCATED),  # cut inside its input
    ]
    verdicts = [v for _, v in TaskFilter(on, []).judge(candidates)]
    assert [(v.verdict, v.rule, v.pooled) for v in verdicts] == [
        ("pending", AWAITING_REPAIR, True),
        ("pending", AWAITING_REPAIR, True),
        ("rejected", "rouge", False),
        ("rejected", verdicts[3].rule, False),
        ("rejected", TRUNCATED, False),
    ]
    assert verdicts[3].rule not in (NO_OUTPUT, AWAITING_REPAIR)
    assert dict(verdicts[3].detail or {}) == {"problem": NO_OUTPUT}
    off = SediConfig.model_validate({"method": "self-instruct"})
    assert [v.rule for _, v in TaskFilter(off, []).judge(candidates[:2])] == [NO_OUTPUT, TRUNCATED]
    ignored = on.model_copy(update={"generation": on.generation.model_copy(update={"prompt_style": "self-instruct"})})
    assert TaskFilter(ignored, []).judge(candidates[:1])[0][1].rule == NO_OUTPUT


# --- whole runs against the scripted teacher -------------------------------------------------------------


@pytest.fixture
def losing(serve_engine: Callable[[Any], Served]) -> Callable[..., Served]:
    """A scripted teacher that loses every second output (options: ScriptedEngine's)."""
    return lambda **options: serve_engine(ScriptedEngine(lose_outputs=True, **options))


def _run(run_dir: Path, server: Served, student: Path, *extra: str, crash_at: str | None = None) -> Any:
    return sedi(*scripted_args(run_dir, server, student, *REPAIR, *ONE_ROUND, *extra), crash_at=crash_at)


def _repaired(run_dir: Path) -> list[tuple[Any, ...]]:
    return rows(
        run_dir,
        "SELECT verdict, rule, output, original_output, detail FROM candidates WHERE original_output IS NOT NULL",
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[Path, Served]]:
    """One uninterrupted run with repair and the teacher that served it (for the module's tests)."""
    from sedi.serve import create_app

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with serve_app(create_app(ScriptedEngine(lose_outputs=True))) as server:
        result = _run(run_dir, server, tiny_model_dir)
        assert result.returncode == 0, result.stderr
        yield run_dir, server


@pytest.mark.slow
def test_repaired_tasks_are_kept_counted_and_a_rerun_pays_nothing(
    reference: tuple[Path, Served], tiny_model_dir: Path
) -> None:
    run_dir, server = reference
    summary = status(run_dir)
    repair_keys = rows(run_dir, "SELECT request_key FROM requests WHERE kind = 'repair'")
    assert summary["repair_calls"] == len(repair_keys) >= 2
    assert summary["calls"] == 4 + summary["repair_calls"] == len(ledger(run_dir))  # repair calls are calls
    repaired = _repaired(run_dir)
    kept = [r for r in repaired if r[0] == "kept"]
    assert summary["repaired_kept"] == len(kept) >= 4
    assert all(out.startswith("In short, ") and original == "" for _, _, out, original, _ in kept)
    assert all(json.loads(detail)["repair"] == "answered" for *_, detail in kept)
    assert not rows(run_dir, "SELECT id FROM candidates WHERE rule IN ('awaiting_repair', 'missing_output')")
    exported = [json.loads(line) for line in (run_dir / "data" / "kept.jsonl").read_text().splitlines()]
    assert sum(r["output"].startswith("In short, ") for r in exported) == len(kept)  # trained and exported
    before = server.counter.total
    again = _run(run_dir, server, tiny_model_dir)
    assert again.returncode == 0, again.stderr
    assert server.counter.total == before and status(run_dir)["calls"] == summary["calls"]


@pytest.mark.slow
def test_sigkill_after_a_repair_answer_then_resume_pays_no_call_twice(
    tmp_path: Path, losing: Callable[..., Served], tiny_model_dir: Path, reference: tuple[Path, Served]
) -> None:
    reference_dir, crashed, server = reference[0], tmp_path / "crashed", losing()
    killed = _run(crashed, server, tiny_model_dir, crash_at="repair:0")
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup ran
    cached = "SELECT COUNT(*) FROM responses JOIN requests USING (request_key) WHERE kind = 'repair'"
    assert rows(crashed, cached)[0][0] >= 1  # killed after a repair answer was paid and cached
    finished = _run(crashed, server, tiny_model_dir)
    assert finished.returncode == 0, finished.stderr
    calls = ledger(crashed)
    answered = [c["request_key"] for c in calls if c["status"] in ("ok", "length")]
    assert len(answered) == len(set(answered)) == status(reference_dir)["calls"]  # nothing received was paid twice
    lost = [c for c in calls if c["status"] == "interrupted"]  # only what was in flight at the kill went again
    assert server.counter.total == len(answered) + len(lost) == len(calls)
    kept = "SELECT id, verdict, rule, output, original_output FROM candidates ORDER BY id"
    assert rows(crashed, kept) == rows(reference_dir, kept)
    assert status(crashed)["repaired_kept"] == status(reference_dir)["repaired_kept"] > 0
    assert status(crashed)["cache_hits"] >= 5  # the 4 generation answers and the repair answer paid before the kill


@pytest.mark.slow
def test_the_budget_caps_repair_calls_and_the_rest_wait(
    tmp_path: Path, losing: Callable[..., Served], tiny_model_dir: Path
) -> None:
    server, run_dir = losing(), tmp_path / "run"
    result = _run(run_dir, server, tiny_model_dir, "--set", "budget.max_calls=5")
    assert result.returncode == 3, result.stderr  # sedi.cli.shared.EXIT_BUDGET
    summary = status(run_dir)
    assert summary["state"] == "budget_exhausted"
    assert summary["calls"] == server.counter.total == 5 and summary["repair_calls"] == 1
    waiting = rows(run_dir, "SELECT COUNT(*) FROM candidates WHERE verdict = 'pending' AND rule = 'budget_stop'")
    assert waiting[0][0] > 0 and summary["repaired_kept"] > 0
    more = _run(run_dir, server, tiny_model_dir, "--set", "budget.max_calls=50")  # budget may change on resume
    assert more.returncode == 0, more.stderr
    resumed = status(run_dir)
    assert resumed["state"] == "finished" and resumed["repair_calls"] > 1
    assert resumed["calls"] == server.counter.total == 4 + resumed["repair_calls"]  # the paid one came from the cache
    assert not rows(run_dir, "SELECT id FROM candidates WHERE verdict = 'pending'")
    assert resumed["repaired_kept"] > summary["repaired_kept"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("answer", "rule", "repair"),
    [
        ("Here is how:", "instance_ends_with_colon", "answered"),
        ("", "missing_output", "no answer"),
        ("1000 words", "repeated_answer", "answered"),  # one answer to several tasks: copied, as the 270M teacher did
    ],
)
def test_a_repaired_output_that_fails_the_output_rules_or_no_answer_is_rejected(
    tmp_path: Path, losing: Callable[..., Served], tiny_model_dir: Path, answer: str, rule: str, repair: str
) -> None:
    server, run_dir = losing(repair_answer=answer), tmp_path / "run"
    # one repair request for the round, so that every task shares its answer with another
    assert _run(run_dir, server, tiny_model_dir, "--set", "generation.repair_per_call=32").returncode == 0
    tried = rows(run_dir, "SELECT verdict, rule, detail, original_output FROM candidates WHERE detail LIKE '%repair%'")
    assert tried and all(v == "rejected" and r == rule and json.loads(d)["repair"] == repair for v, r, d, _ in tried)
    assert status(run_dir)["repaired_kept"] == 0 and status(run_dir)["repair_calls"] > 0
