"""Generation prompts and the parsing of their answers.

The completion prompt follows Self-Instruct's shape (a numbered list of tasks that a base model
continues), worded for this project. The chat prompt asks an instruction-tuned model for the same
numbered format so that one parser serves both.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sedi.tasks import Task

COMPLETION_HEADER = "Here is a list of diverse tasks that people ask an assistant to do:\n\n"
CHAT_SYSTEM = "You write new, diverse task instructions for training an AI assistant."
CHAT_USER = (
    "Here are example tasks:\n\n{examples}\n\n"
    "Write {n} new tasks that differ from these and from each other, continuing the numbering "
    "in the same format ('Task N: <instruction>'). Write only the tasks."
)

_TASK_LINE = re.compile(r"^\s*(?:task\s*)?(\d{1,3})\s*[:.)]\s*(.*)$", re.IGNORECASE)
# Small models sometimes number twice ("Task 8: 4. He could say ..."): the inner number is noise.
_STRAY_ENUMERATOR = re.compile(r"^\d{1,3}[.)]\s+")


def sample_in_context(
    human: Sequence[Task], machine: Sequence[Task], n_human: int, n_machine: int, rng: random.Random
) -> list[Task]:
    """Self-Instruct's mix: ``n_human`` human seeds and ``n_machine`` machine tasks (fewer while
    there are fewer), human first, each group in random order."""
    chosen = rng.sample(list(human), min(n_human, len(human)))
    chosen += rng.sample(list(machine), min(n_machine, len(machine)))
    return chosen


def numbered_tasks(tasks: Sequence[Task]) -> str:
    return "\n".join(f"Task {i}: {t.instruction}" for i, t in enumerate(tasks, start=1))


def completion_prompt(tasks: Sequence[Task]) -> str:
    return f"{COMPLETION_HEADER}{numbered_tasks(tasks)}\nTask {len(tasks) + 1}:"


def chat_messages(tasks: Sequence[Task], n_new: int) -> tuple[tuple[str, str], ...]:
    user = CHAT_USER.format(examples=numbered_tasks(tasks), n=n_new)
    return (("system", CHAT_SYSTEM), ("user", user))


@dataclass(frozen=True)
class ParsedTask:
    position: int
    instruction: str


def parse_numbered_tasks(text: str, *, starts_inside_item: bool, truncated: bool) -> list[ParsedTask]:
    """Split a numbered list into instructions.

    ``starts_inside_item``: completion prompts end with an open 'Task N:', so the text begins inside
    that item. When ``truncated``, the last item was cut off by the length limit and is dropped.
    """
    items: list[list[str]] = [[]] if starts_inside_item else []
    for line in text.splitlines():
        match = _TASK_LINE.match(line)
        if match:
            items.append([match.group(2)])
        elif items:
            items[-1].append(line)
    if truncated and items:
        items.pop()
    parsed = []
    for position, lines in enumerate(items):
        instruction = _STRAY_ENUMERATOR.sub("", " ".join(part.strip() for part in lines if part.strip()))
        if instruction:
            parsed.append(ParsedTask(position, instruction))
    return parsed
