"""Every prompt the teacher sees, in one place, and the in-context sampling.

Two generation styles, each for base models (a document the model continues) and chat models (a
request for N tasks in a parseable format):

- ``self-instruct``: a numbered list of instructions (as the original Self-Instruct); instances are
  written afterwards, per task, output-first for classification tasks and input-first otherwise;
- ``alpaca``: numbered blocks with instruction, input and output together (as Stanford Alpaca), so one
  call yields complete tasks.

The wording is this project's own. Parsing lives in :mod:`sedi.stages.parsing`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sedi.config.seeds import Task

Messages = tuple[tuple[str, str], ...]
NO_INPUT = "<noinput>"

LIST_HEADER = "Here is a list of diverse tasks that people ask an assistant to do:\n\n"
BLOCK_HEADER = (
    "Here is a list of diverse tasks that people ask an assistant to do. Each task has an instruction, "
    f"an input ({NO_INPUT} when none is needed) and a good answer.\n\n"
)
CHAT_SYSTEM = "You write new, diverse tasks for training an AI assistant."
CHAT_LIST_REQUEST = (
    "Here are example tasks:\n\n{examples}\n\n"
    "Write {n} new tasks that differ from these and from each other, continuing the numbering "
    "in the same format ('Task N: <instruction>'). Write only the tasks."
)
CHAT_BLOCK_REQUEST = (
    "Here are example tasks:\n\n{examples}\n\n"
    "Write {n} new tasks that differ from these and from each other. Answer with one JSON object per "
    'line and nothing else, like {{"instruction": "...", "input": "...", "output": "..."}}; use an empty '
    '"input" when the task needs none.'
)

CLASSIFY_HEADER = (
    "Decide whether each task is a classification task: one whose answer is a label chosen from a small, "
    "fixed set of options (yes/no, positive/negative, a category name).\n\n"
)
# Our own few-shot examples, balanced between the two answers.
CLASSIFY_EXAMPLES: tuple[tuple[str, bool], ...] = (
    ("Tell whether the movie review is positive or negative.", True),
    ("Write a short story about a lighthouse keeper.", False),
    ("Is the following statement a fact or an opinion?", True),
    ("Summarize the article in two sentences.", False),
    ("Which category does this product belong to: clothing, food or electronics?", True),
    ("Suggest three names for a bakery.", False),
    ("Decide if the email is spam.", True),
    ("Explain how a rainbow forms.", False),
)
INSTANCE_HEADER = (
    "Write examples for each task: an input and its correct output. When the task needs no input, write "
    f"Input: {NO_INPUT}. For classification tasks, write the output label first and then an input with that "
    "label, covering different labels.\n\n"
)
INPUT_FIRST_EXAMPLE = (
    "Task: Convert the temperature from Celsius to Fahrenheit.\n"
    "Example 1\nInput: 25 degrees Celsius\nOutput: 77 degrees Fahrenheit\n"
    "Example 2\nInput: -10 degrees Celsius\nOutput: 14 degrees Fahrenheit\n\n"
    "Task: Give a tip for staying focused while studying.\n"
    f"Example 1\nInput: {NO_INPUT}\nOutput: Put your phone in another room and study in 25-minute blocks.\n\n"
)
OUTPUT_FIRST_EXAMPLE = (
    "Task: Tell whether the sentence expresses a positive or a negative feeling.\n"
    "Example 1\nOutput: Positive\nInput: I could not stop smiling after the concert.\n"
    "Example 2\nOutput: Negative\nInput: The train was late again and I missed my meeting.\n\n"
)


def example_texts(output_first: bool) -> frozenset[str]:
    """The inputs and outputs shown in an instance prompt's own examples (copies of them are filtered)."""
    example = OUTPUT_FIRST_EXAMPLE if output_first else INPUT_FIRST_EXAMPLE
    values = (line.split(":", 1)[1].strip() for line in example.splitlines() if line.startswith(("Input:", "Output:")))
    return frozenset(v for v in values if v != NO_INPUT)


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


def task_block(number: int, task: Task) -> str:
    input_text = task.input.strip() or NO_INPUT
    return f"Task {number}\nInstruction: {task.instruction}\nInput: {input_text}\nOutput: {task.output}\n"


def task_blocks(tasks: Sequence[Task]) -> str:
    return "\n".join(task_block(i, t) for i, t in enumerate(tasks, start=1))


def completion_prompt(tasks: Sequence[Task], style: str = "self-instruct") -> str:
    """A document the base model continues; it ends inside the open next item."""
    if style == "alpaca":
        return f"{BLOCK_HEADER}{task_blocks(tasks)}\nTask {len(tasks) + 1}\nInstruction:"
    return f"{LIST_HEADER}{numbered_tasks(tasks)}\nTask {len(tasks) + 1}:"


def chat_messages(tasks: Sequence[Task], n_new: int, style: str = "self-instruct") -> Messages:
    if style == "alpaca":
        user = CHAT_BLOCK_REQUEST.format(examples=task_blocks(tasks), n=n_new)
    else:
        user = CHAT_LIST_REQUEST.format(examples=numbered_tasks(tasks), n=n_new)
    return (("system", CHAT_SYSTEM), ("user", user))


def classify_prompt(instruction: str) -> str:
    shots = "".join(f"Task: {t}\nClassification: {'Yes' if y else 'No'}\n\n" for t, y in CLASSIFY_EXAMPLES)
    return f"{CLASSIFY_HEADER}{shots}Task: {instruction}\nClassification:"


def instance_prompt(instruction: str, output_first: bool) -> str:
    """Ends inside the first example's first field, so a base model writes the value next."""
    example = OUTPUT_FIRST_EXAMPLE if output_first else INPUT_FIRST_EXAMPLE
    first_field = "Output:" if output_first else "Input:"
    return f"{INSTANCE_HEADER}{example}Task: {instruction}\nExample 1\n{first_field}"


def as_chat(prompt: str) -> Messages:
    """A completion prompt sent to a chat model: the document as the request, to be continued."""
    return (("system", "Continue the document exactly where it stops, in the same format."), ("user", prompt))


# Output repair (generation.repair): one request asks for the outputs of several tasks whose generation lost them.
REPAIR_HEADER = (
    f"Below are numbered tasks, each with an instruction and an input ({NO_INPUT} when none is needed), then a "
    "good answer to each task, numbered the same way.\n\n"
)
# Our own answered examples, shown to base models; an output copying one of them is filtered (example texts).
REPAIR_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("Convert the temperature from Celsius to Fahrenheit.", "25 degrees Celsius", "77 degrees Fahrenheit."),
    ("Give a tip for staying focused while studying.", "", "Put your phone in another room and study in short blocks."),
    (
        "Shorten the sentence to a headline.",
        "The train was late again and I missed my meeting.",
        "Late train, missed meeting",
    ),
)
CHAT_REPAIR_SYSTEM = "You write good answers to tasks used for training an AI assistant."
CHAT_REPAIR_REQUEST = (
    "Write a good answer to each of these {n} tasks.\n\n{tasks}\n\n"
    'Answer with one JSON object per line and nothing else, like {{"task": 1, "output": "..."}}: one line per '
    "task, in order, with the answer only (not the instruction)."
)


def _repair_tasks(tasks: Sequence[tuple[str, str]]) -> str:
    return "\n".join(
        f"Task {i}\nInstruction: {ins}\nInput: {inp.strip() or NO_INPUT}" for i, (ins, inp) in enumerate(tasks, 1)
    )


def repair_prompt(tasks: Sequence[tuple[str, str]]) -> str:
    """A document of answered tasks, then ``tasks`` (instruction, input), ending inside the open 'Answer 1:'."""
    shots = _repair_tasks([(ins, inp) for ins, inp, _ in REPAIR_EXAMPLES])
    answers = "\n".join(f"Answer {i}: {out}" for i, (*_, out) in enumerate(REPAIR_EXAMPLES, 1))
    asked = _repair_tasks(tasks)
    return f"{REPAIR_HEADER}Tasks:\n{shots}\n\nAnswers:\n{answers}\n\nTasks:\n{asked}\n\nAnswers:\nAnswer 1:"


def repair_messages(tasks: Sequence[tuple[str, str]]) -> Messages:
    return (
        ("system", CHAT_REPAIR_SYSTEM),
        ("user", CHAT_REPAIR_REQUEST.format(n=len(tasks), tasks=_repair_tasks(tasks))),
    )


def repair_example_texts() -> frozenset[str]:
    """The inputs and outputs of the repair prompt's own examples (an output copying one is filtered)."""
    return frozenset(text for _, inp, out in REPAIR_EXAMPLES for text in (inp, out) if text)
