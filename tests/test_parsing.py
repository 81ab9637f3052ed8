"""Parsing what teachers really write: outputs recorded from the bundled Gemma-3-270m (base model, alpaca-style
blocks, chat-style requests it answered as a base model, instance prompts) and from a real instruction-tuned chat
model (SmolLM2-135M-Instruct, both chat requests), plus the shapes larger chat APIs use (fenced JSON, arrays,
markdown bold), written by hand and marked as such."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sedi.stages.parsing import (
    NO_OUTPUT,
    TRUNCATED,
    parse_classification,
    parse_generated,
    parse_instances,
    parse_json_tasks,
    parse_task_blocks,
)

RAW = Path(__file__).parent / "data" / "raw"


def recorded(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (RAW / name).read_text().splitlines()]


def test_recorded_alpaca_blocks_give_one_item_per_block_with_clean_fields() -> None:
    for record in recorded("gemma_alpaca.jsonl"):
        text, truncated = str(record["text"]), record["finish_reason"] == "length"
        items = parse_task_blocks(text, starts_inside_item=True, truncated=truncated)
        # the open item, then one per 'Task N' header that has anything under it
        headers = len(re.findall(r"^Task \d+[ \t]*\n(?=\s*\S)", text, flags=re.MULTILINE))
        assert len(items) == headers + 1, text[:300]
        assert [i.position for i in items] == list(range(len(items)))
        cut_at_a_header = re.search(r"\nTask \d+\s*$", text) is not None  # the last item was complete
        if truncated:
            assert (items[-1].problem == TRUNCATED) != cut_at_a_header
        for item in items:
            assert item.instruction or item.problem in ("missing_instruction", TRUNCATED)
            assert not item.instruction.lower().startswith("instruction")
            assert "<noinput>" not in item.input and "<noinput>" not in item.output
            if item.problem is None:
                assert item.instruction and item.output
        assert any(i.problem is None and i.output for i in items)


def test_recorded_chat_requests_never_crash_and_leave_no_numbering() -> None:
    found = 0
    for record in recorded("gemma_chat_request.jsonl"):
        text, truncated = str(record["text"]), record["finish_reason"] == "length"
        items = parse_generated(text, style=str(record["style"]), starts_inside_item=False, truncated=truncated)
        found += len(items)
        for item in items:
            assert item.instruction.strip() == item.instruction
            assert item.instruction or item.problem is not None
            assert not re.match(r"(task\s*)?\d+\s*[.):]", item.instruction, re.IGNORECASE)
    assert found > 10  # the self-instruct-style answers are numbered lists


def test_recorded_instances_parse_output_first_and_input_first() -> None:
    records = recorded("gemma_instances.jsonl")
    by_instruction = {
        str(r["instruction"]): parse_instances(
            str(r["text"]), output_first=bool(r["output_first"]), starts_inside_item=True, truncated=False
        )
        for r in records
    }
    labels = by_instruction["Classify the following animal as a mammal, bird or fish."]
    assert [i.output.lower() for i in labels] == ["mammal", "mammal"]
    assert all(i.input for i in labels)
    breakfast = by_instruction["Suggest a healthy breakfast for a busy morning."]
    assert len(breakfast) == 1 and breakfast[0].input == "" and breakfast[0].output.startswith("Walk")


def test_recorded_answers_of_a_real_chat_model_to_both_chat_requests() -> None:
    """SmolLM2-135M-Instruct (scripts/record_chat_outputs.py): it answers the numbered-list request with clean
    lists, and mostly ignores the block request (code, JSON keyed by task, bare 'Task 1:' headers)."""
    numbered_items = 0
    for record in recorded("smollm2_chat.jsonl"):
        text, truncated, style = str(record["text"]), record["finish_reason"] == "length", str(record["style"])
        items = parse_generated(text, style=style, starts_inside_item=False, truncated=truncated)
        for item in items:
            assert item.instruction.strip() == item.instruction
            assert not re.match(r"(task\s*)?\d+\s*[.):]", item.instruction, re.IGNORECASE)
            assert not re.search(r"^\s*(instruction|input|output)\s*:", item.instruction, re.IGNORECASE | re.MULTILINE)
        kept = [i for i in items if i.problem is None]
        if style == "self-instruct":  # one item per 'Task N:' line, all complete when the answer ended by itself
            assert len(items) == len(re.findall(r"^Task \d+:", text, re.MULTILINE)), text[:300]
            assert truncated or len(kept) == len(items)
            numbered_items += len(kept)
        elif "Instruction:" not in text:  # no field labels: nothing may pass as a task, and code never does
            assert kept == [], text[:300]
    assert numbered_items >= 40


def test_fenced_json_lines_from_a_chat_model() -> None:  # hand-written, in the shape chat APIs answer
    text = (
        "Here are the new tasks:\n```json\n"
        '{"instruction": "Name three rivers in Africa.", "input": "", "output": "Nile, Congo, Niger."}\n'
        '{"instruction": "Fix the grammar.", "input": "He go home.", "output": "He goes home."}\n'
        '{"instruction": "Broken line", "input": \n'
        '{"instruction": "Give a synonym.", "input": "happy", "output": ""}\n```'
    )
    items = parse_generated(text, style="alpaca", starts_inside_item=False, truncated=False)
    assert [i.problem for i in items] == [None, None, "malformed_json", NO_OUTPUT]
    assert items[1].input == "He go home." and items[1].output == "He goes home."


def test_json_array_and_cut_off_last_line() -> None:  # hand-written
    array = '[{"instruction": "Count the vowels.", "input": "banana", "output": "3"}]'
    assert [i.output for i in parse_json_tasks(array, truncated=False)] == ["3"]
    cut = '{"instruction": "A.", "input": "", "output": "b"}\n{"instruction": "Tell a jo'
    items = parse_json_tasks(cut, truncated=True)
    assert [i.instruction for i in items] == ["A."]


def test_markdown_blocks_from_a_chat_model() -> None:  # hand-written
    text = (
        "Sure! Here are two new tasks.\n\n**Task 1**\n**Instruction:** Sort the numbers.\n**Input:** 3, 1, 2\n"
        "**Output:** 1, 2, 3\n\n**Task 2**\n- Instruction: Suggest a name for a cat.\n- Input: <noinput>\n"
        "- Output: Miso"
    )
    items = parse_generated(text, style="alpaca", starts_inside_item=False, truncated=False)
    assert [(i.instruction, i.input, i.output) for i in items] == [
        ("Sort the numbers.", "3, 1, 2", "1, 2, 3"),
        ("Suggest a name for a cat.", "", "Miso"),
    ]


def test_empty_answers_and_classification_answers() -> None:
    assert parse_generated("", style="alpaca", starts_inside_item=True, truncated=False) == []
    assert parse_generated("   \n", style="self-instruct", starts_inside_item=False, truncated=False) == []
    assert parse_classification(" Yes") is True
    assert parse_classification("no.") is False
    assert parse_classification(" Maybe") is None
    assert parse_classification("") is None
