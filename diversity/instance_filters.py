"""Self-Instruct's post-filters on the instances (input, output pairs) written for one task.

An instance is dropped when its output is empty, when its output repeats its input, or when either
field ends with a colon (the model stopped before writing the value). A task whose instances give
different outputs for the same input is contradictory and loses all of them. Exact duplicates count
once. Plain strings in, plain verdicts out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

EMPTY_OUTPUT = "instance_empty_output"
OUTPUT_EQUALS_INPUT = "instance_output_equals_input"
ENDS_WITH_COLON = "instance_ends_with_colon"
CONFLICTING_OUTPUTS = "instances_conflict"
COPIES_EXAMPLE = "instance_copies_prompt_example"
NO_INSTANCE = "no_instance"


@dataclass(frozen=True)
class InstanceVerdict:
    """The instances that survive, in order, and why the others did not."""

    kept: list[tuple[str, str]]
    dropped: list[tuple[int, str]]  # (index in the input, rule)

    @property
    def task_rule(self) -> str | None:
        """Why the task has no instance left (None when it has one): the single rule when all
        instances fell to the same one, else the generic ``no_instance``."""
        if self.kept:
            return None
        rules = {rule for _, rule in self.dropped}
        return rules.pop() if len(rules) == 1 else NO_INSTANCE


def instance_rule(input_text: str, output: str, prompt_examples: Collection[str] = ()) -> str | None:
    """The first post-filter one instance fails, or None. ``prompt_examples``: texts shown in the
    prompt's own examples; small teachers often copy them instead of writing for the task."""
    inp, out = input_text.strip(), output.strip()
    if not out:
        return EMPTY_OUTPUT
    if out in prompt_examples or (inp and inp in prompt_examples):
        return COPIES_EXAMPLE
    if inp and inp == out:
        return OUTPUT_EQUALS_INPUT
    if inp.endswith(":") or out.endswith(":"):
        return ENDS_WITH_COLON
    return None


def filter_instances(
    instances: Sequence[tuple[str, str]], max_kept: int | None = None, prompt_examples: Collection[str] = ()
) -> InstanceVerdict:
    """Apply the post-filters to one task's instances; keep at most ``max_kept`` of the survivors."""
    kept: list[tuple[str, str]] = []
    dropped: list[tuple[int, str]] = []
    kept_at: list[int] = []
    for index, (inp, out) in enumerate(instances):
        rule = instance_rule(inp, out, prompt_examples)
        pair = (inp.strip(), out.strip())
        if rule is not None:
            dropped.append((index, rule))
        elif pair not in kept:
            kept.append(pair)
            kept_at.append(index)
    outputs_by_input: dict[str, set[str]] = {}
    for inp, out in kept:
        if inp:
            outputs_by_input.setdefault(inp, set()).add(out)
    if any(len(outs) > 1 for outs in outputs_by_input.values()):
        return InstanceVerdict([], dropped + [(i, CONFLICTING_OUTPUTS) for i in kept_at])
    if not instances:
        return InstanceVerdict([], [])
    return InstanceVerdict(kept[:max_kept] if max_kept is not None else kept, dropped)
