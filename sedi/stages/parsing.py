"""Turning what real teachers write into tasks, without ever crashing the run.

Handles numbering variants ('Task 9:', '9.', '9)'), numbered blocks with Instruction/Input/Output
fields, JSON (one object per line, an array, or a fenced block), a last item cut off by the length
limit (reported so that it is recorded and dropped) and empty answers. Every item that cannot become
a task is returned with the reason, so that it is stored with a verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sedi.stages.prompts import NO_INPUT

TRUNCATED = "truncated"
# A last item cut inside its output: its instruction and input are complete (an Output field had started, or
# the input was the no-input marker), so generation.repair can ask for the output. Its rule is still 'truncated'.
TRUNCATED_OUTPUT = "truncated_output"
NO_OUTPUT = "missing_output"
NO_INSTRUCTION = "missing_instruction"

_TASK_LINE = re.compile(r"^\s*(?:task\s*)?(\d{1,3})\s*[:.)]\s*(.*)$", re.IGNORECASE)
_BLOCK_HEADER = re.compile(r"^\s*(?:#+\s*)?(?:\*\*)?task\s*(\d{1,3})\s*:?\s*(?:\*\*)?\s*$", re.IGNORECASE)
_FIELD = re.compile(
    r"^\s*(?:\d{1,3}\.\s*)?(?:[-*]\s+)?(?:\*\*)?(instruction|input|output)\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.*)$",
    re.IGNORECASE,
)
_EXAMPLE_HEADER = re.compile(r"^\s*example\s*(\d{1,3})\s*:?\s*$", re.IGNORECASE)
# Small models sometimes number twice ("Task 8: 4. He could say ..."): the inner number is noise.
_STRAY_ENUMERATOR = re.compile(r"^\d{1,3}[.)]\s+")


@dataclass(frozen=True)
class ParsedTask:
    """One item of a response. ``problem`` is None for a usable task, else why it is not one."""

    position: int
    instruction: str
    input: str = ""
    output: str = ""
    problem: str | None = None


@dataclass(frozen=True)
class ParsedInstance:
    input: str
    output: str


def _clean_input(text: str) -> str:
    text = text.strip()
    return "" if text.lower() in {NO_INPUT, "<no input>", "none", "n/a", "(none)", '""'} else text


def _joined(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def parse_numbered_tasks(text: str, *, starts_inside_item: bool, truncated: bool) -> list[ParsedTask]:
    """Split a numbered list of instructions. ``starts_inside_item``: completion prompts end with an
    open 'Task N:', so the text begins inside that item."""
    items: list[list[str]] = [[]] if starts_inside_item else []
    for line in text.splitlines():
        match = _TASK_LINE.match(line)
        if match:
            items.append([match.group(2)])
        elif items:
            items[-1].append(line)
    parsed = []
    for position, lines in enumerate(items):
        instruction = _STRAY_ENUMERATOR.sub("", " ".join(part.strip() for part in lines if part.strip()))
        if instruction:
            cut = truncated and position == len(items) - 1
            parsed.append(ParsedTask(position, instruction, problem=TRUNCATED if cut else None))
    return parsed


def _fields_of(lines: list[str], first_field: str | None) -> dict[str, str]:
    fields: dict[str, list[str]] = {}
    current = first_field
    if current is not None:
        fields[current] = []
    for line in lines:
        match = _FIELD.match(line)
        if match and match.group(1).lower() not in fields:
            current = match.group(1).lower()
            fields[current] = [match.group(2)]
        elif current is not None:
            fields[current].append(line)
    return {name: _joined(value) for name, value in fields.items()}


def _fields_complete(fields: dict[str, str]) -> bool:
    """Whether a cut item's instruction and input are whole: its Output field had started, or its input is the
    no-input marker (a cut inside a real input cannot be told from a complete one)."""
    return "output" in fields or ("input" in fields and fields["input"] != "" and not _clean_input(fields["input"]))


def parse_task_blocks(text: str, *, starts_inside_item: bool, truncated: bool) -> list[ParsedTask]:
    """Split 'Task N' blocks with Instruction/Input/Output fields (the alpaca style)."""
    blocks: list[list[str]] = [[]] if starts_inside_item else []
    for line in text.splitlines():
        if _BLOCK_HEADER.match(line):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
        elif _FIELD.match(line):  # a chat answer that skipped the first header
            blocks.append([line])
    parsed = []
    for position, lines in enumerate(blocks):
        first = "instruction" if starts_inside_item and position == 0 else None
        fields = _fields_of(lines, first)
        instruction = fields.get("instruction", "")
        cut = truncated and position == len(blocks) - 1
        if not instruction:
            if any(line.strip() for line in lines):
                parsed.append(ParsedTask(position, "", problem=TRUNCATED if cut else NO_INSTRUCTION))
            continue
        output = _clean_input(fields.get("output", ""))
        problem = None
        if cut:
            problem = TRUNCATED_OUTPUT if _fields_complete(fields) else TRUNCATED
        elif not output:
            problem = NO_OUTPUT
        parsed.append(ParsedTask(position, instruction, _clean_input(fields.get("input", "")), output, problem))
    return parsed


def _json_objects(text: str) -> list[object]:
    body = re.sub(r"^\s*```(?:json|jsonl)?\s*$", "", text, flags=re.MULTILINE | re.IGNORECASE).strip()
    if body.startswith("["):
        try:
            loaded = json.loads(body)
            return loaded if isinstance(loaded, list) else []
        except json.JSONDecodeError:
            pass
    objects: list[object] = []
    for line in body.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError:
                objects.append(None)  # a broken line still takes its position
    return objects


def parse_json_tasks(text: str, *, truncated: bool) -> list[ParsedTask]:
    """JSON lines or a JSON array of objects with instruction/input/output."""
    parsed = []
    objects = _json_objects(text)
    for position, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("instruction"), str):
            if truncated and position == len(objects) - 1:
                continue  # the cut-off line carries nothing usable to record
            parsed.append(ParsedTask(position, "", problem="malformed_json"))
            continue
        output = obj.get("output")
        output_text = output.strip() if isinstance(output, str) else ""
        problem = None if output_text else NO_OUTPUT
        raw_input = obj.get("input")
        input_text = _clean_input(raw_input) if isinstance(raw_input, str) else ""
        parsed.append(ParsedTask(position, obj["instruction"].strip(), input_text, output_text, problem))
    return parsed


def parse_generated(text: str, *, style: str, starts_inside_item: bool, truncated: bool) -> list[ParsedTask]:
    """Parse a generation response in whichever format the model actually used."""
    if not starts_inside_item and re.search(r'^\s*(?:```|\[\s*$|\[?\s*\{\s*"instruction")', text, re.MULTILINE):
        found = parse_json_tasks(text, truncated=truncated)
        if any(p.problem is None for p in found):
            return found
    if style == "alpaca":
        return parse_task_blocks(text, starts_inside_item=starts_inside_item, truncated=truncated)
    return parse_numbered_tasks(text, starts_inside_item=starts_inside_item, truncated=truncated)


def parse_classification(text: str) -> bool | None:
    """'Yes' / 'No' at the start of the answer; None when the answer says neither."""
    match = re.match(r"\W*(yes|no)\b", text, re.IGNORECASE)
    return None if match is None else match.group(1).lower() == "yes"


def parse_instances(
    text: str, *, output_first: bool, starts_inside_item: bool, truncated: bool
) -> list[ParsedInstance]:
    """Examples written for one task. The text ends at the next task (stop sequence) or the limit;
    a cut-off last example is dropped. Missing fields become empty strings (post-filters judge)."""
    text = re.split(r"^\s*Task\s*:", text, maxsplit=1, flags=re.MULTILINE)[0]
    examples: list[list[str]] = [[]] if starts_inside_item else []
    for line in text.splitlines():
        if _EXAMPLE_HEADER.match(line):
            examples.append([])
        elif examples:
            examples[-1].append(line)
    if truncated and examples:
        examples.pop()
    first = ("output" if output_first else "input") if starts_inside_item else None
    instances = []
    for index, lines in enumerate(examples):
        fields = _fields_of(lines, first if index == 0 else None)
        if fields:
            # '<noinput>' as an output is the model echoing the marker, not an answer: empty, then filtered
            instances.append(
                ParsedInstance(_clean_input(fields.get("input", "")), _clean_input(fields.get("output", "")))
            )
    return instances


_ANSWER = re.compile(r"^\s*(?:\*\*)?answer\s*(\d{1,3})\s*[:.)]\s*(?:\*\*)?\s*(.*)$", re.IGNORECASE)


def parse_repair_answers(text: str, count: int, *, starts_inside_item: bool, truncated: bool) -> dict[int, str]:
    """The outputs a repair answer gives, by task number (1..count): JSON lines {"task": N, "output": ...} (chat
    prompts) or 'Answer N:' items (completion prompts end with an open 'Answer 1:'). A cut-off last answer,
    an empty one and a number outside 1..count are left out; the first answer to a number wins."""
    found: list[tuple[int, str]] = []
    objects = _json_objects(text) if not starts_inside_item else []
    for obj in objects:  # a line cut by the length limit does not parse, so every parsed object is whole
        if isinstance(obj, dict) and isinstance(obj.get("output"), str):
            number = obj.get("task")
            if isinstance(number, int) or (isinstance(number, str) and number.strip().isdigit()):
                found.append((int(number), obj["output"]))
    if not found:
        items: list[tuple[int, list[str]]] = [(1, [])] if starts_inside_item else []
        for line in re.split(r"^\s*(?:Tasks?|Instruction)\s*:", text, maxsplit=1, flags=re.MULTILINE)[0].splitlines():
            match = _ANSWER.match(line)
            if match:
                items.append((int(match.group(1)), [match.group(2)]))
            elif items:
                items[-1][1].append(line)
        if truncated and items:
            items.pop()
        found = [(number, _joined(lines)) for number, lines in items]
    answers: dict[int, str] = {}
    for number, output in found:
        cleaned = _clean_input(output)
        if 1 <= number <= count and cleaned and number not in answers:
            answers[number] = cleaned
    return answers
