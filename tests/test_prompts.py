"""Prompt building and parsing, on raw outputs recorded from the bundled teacher (not tidy inventions)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from sedi.config.seeds import Task, load_seed_tasks
from sedi.stages.parsing import parse_numbered_tasks
from sedi.stages.prompts import chat_messages, completion_prompt, sample_in_context

RAW = Path(__file__).parent / "data" / "raw" / "gemma_completion.jsonl"


def recorded() -> list[dict[str, str]]:
    return [json.loads(line) for line in RAW.read_text().splitlines()]


def test_every_task_line_of_real_outputs_becomes_one_item() -> None:
    for record in recorded():
        text, truncated = record["text"], record["finish_reason"] == "length"
        items = parse_numbered_tasks(text, starts_inside_item=True, truncated=truncated)
        numbered = len(re.findall(r"^\s*Task \d+:", text, flags=re.MULTILINE))
        head = re.split(r"^\s*Task \d+:", text, maxsplit=1, flags=re.MULTILINE)[0]
        # the open 'Task 7:' item (when the text starts inside it), then one item per numbered line
        expected = (1 if head.strip() else 0) + numbered
        assert len(items) == expected, record["text"][:200]
        assert [i.problem for i in items if i.problem] == (["truncated"] if truncated else [])
        assert all(item.instruction and not item.instruction.startswith("Task ") for item in items)
        assert not any(re.match(r"\d+\. ", item.instruction) for item in items)


def test_stray_inner_numbers_are_removed() -> None:
    text = ' First item.\nTask 8: 4. He could say, "hello".\nTask 9: 5) Another one.'
    items = parse_numbered_tasks(text, starts_inside_item=True, truncated=False)
    assert [i.instruction for i in items] == ["First item.", 'He could say, "hello".', "Another one."]


def test_truncated_last_item_is_flagged_and_continuation_lines_join() -> None:
    text = " Write a poem\nabout the sea.\nTask 8: Name three rivers.\nTask 9: Explain why the"
    items = parse_numbered_tasks(text, starts_inside_item=True, truncated=True)
    assert [i.instruction for i in items] == ["Write a poem about the sea.", "Name three rivers.", "Explain why the"]
    assert [i.problem for i in items] == [None, None, "truncated"]
    assert [i.position for i in items] == [0, 1, 2]


def test_chat_style_numbering_variants() -> None:
    text = "Sure! Here are new tasks:\n9. Summarise the article.\nTask 10) Translate to French.\n11: Sort the list."
    items = parse_numbered_tasks(text, starts_inside_item=False, truncated=False)
    assert [i.instruction for i in items] == ["Summarise the article.", "Translate to French.", "Sort the list."]
    assert parse_numbered_tasks("", starts_inside_item=True, truncated=False) == []


def test_prompts_are_seeded_and_end_with_the_open_item() -> None:
    seeds = load_seed_tasks(None)
    machine = [Task(f"m{i}", f"Machine task {i}.", origin="machine") for i in range(5)]
    first = sample_in_context(seeds, machine, 6, 2, random.Random("0:1"))
    again = sample_in_context(seeds, machine, 6, 2, random.Random("0:1"))
    assert first == again and len(first) == 8
    assert [t.origin for t in first] == ["human"] * 6 + ["machine"] * 2
    assert completion_prompt(first).endswith("\nTask 9:")
    assert sample_in_context(seeds, [], 6, 2, random.Random(0))[-1].origin == "human"  # fewer while none
    (_, system), (_, user) = chat_messages(first, n_new=8)
    assert system and "Task 8: Machine task" in user and "Write 8 new tasks" in user
