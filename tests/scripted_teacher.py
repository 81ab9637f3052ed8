"""A scripted teacher for fast loop tests: an engine for the real OpenAI-compatible server (sedi.serve) that
writes well-formed alpaca-style task blocks, chosen reproducibly from the request's seed.

The bundled Gemma checks the real path (tests/test_self_instruct_e2e.py) but takes tens of seconds per
call on CPU; the loop's own logic (filters, batches, training, feedback, resumption) is tested against
this engine behind the same server and the same openai client. Tasks are composed from parts, so
some are near-duplicates of others (ROUGE-L between 0.7 and 0.85: rejected by Self-Instruct's threshold,
kept by SeDi's), and every call also repeats one in-context instruction verbatim (always rejected).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from typing import Any

from sedi.config.seeds import bundled_path
from sedi.serve._engine import GenerationResult

_VERBS = ["Explain", "Describe", "Summarize", "List the key facts about", "Write a short story about", "Compare"]
_TOPICS = [
    "how volcanoes form", "the water cycle", "the history of the printing press", "how vaccines train the immune "
    "system", "why leaves change colour in autumn", "the rules of chess", "how a bill becomes a law",
    "the causes of inflation", "how bees make honey", "the life of a star", "how the internet routes data",
    "the benefits of regular exercise", "how glaciers shape valleys", "the origins of jazz",
]  # fmt: skip
_AUDIENCES = ["for a ten-year-old", "in three sentences", "for a busy manager", "using an analogy"]


def _task_pool() -> list[tuple[str, str, str]]:
    tasks = []
    for verb, topic, audience in itertools.product(_VERBS, _TOPICS, _AUDIENCES):
        has_input = (len(verb) + len(topic)) % 3 == 0
        tasks.append(
            (
                f"{verb} {topic} {audience}.",
                f"Focus on {topic.split()[-1]}." if has_input else "",
                f"Here is how: {topic}.",
            )
        )
    return tasks


TASKS = _task_pool()


class ScriptedEngine:
    """Implements what sedi.serve.create_app needs: model_id, has_chat_template, context_length,
    count_tokens and generate. Tokens are whitespace words."""

    has_chat_template = False
    context_length = None

    def __init__(
        self,
        model_id: str = "scripted-teacher",
        tasks_per_call: int = 5,
        *,
        lose_outputs: bool = False,
        repair_answer: str = "In short, {instruction}",
    ) -> None:
        """``lose_outputs``: every second task block of a generation answer has an empty output (what small teachers
        often write); ``repair_answer``: the answer to each task of a repair prompt (stages.repair), formatted with the
        task's ``instruction``; an empty one leaves that task unanswered."""
        self.model_id = model_id
        self.tasks_per_call = tasks_per_call
        self.lose_outputs = lose_outputs
        self.repair_answer = repair_answer
        self.calls = 0

    def count_tokens(self, messages: Sequence[Any]) -> int:
        return sum(len(str(m).split()) for m in messages)

    def generate(
        self, prompt: Any, *, max_tokens: int = 16, seed: int | None = None, stop: Any = None, **_: Any
    ) -> GenerationResult:
        self.calls += 1
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        rng = random.Random(seed)
        body = self._answer(text, rng)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        cut = min([body.find(s) for s in stops if s and s in body] or [len(body)])
        body = body[:cut]
        words = body.split(" ")
        finish = "stop"
        if len(words) > max_tokens:
            body, finish = " ".join(words[:max_tokens]), "length"
        return GenerationResult(body, finish, len(text.split()), min(len(words), max_tokens))  # type: ignore[arg-type]

    def _answer(self, text: str, rng: random.Random) -> str:
        """What a tidy teacher writes for each of sedi's prompt kinds (see sedi.stages.prompts)."""
        if text.endswith("Classification:"):
            return " Yes" if "whether" in text.rsplit("Task:", 1)[-1] else " No"
        if text.endswith(("Example 1\nInput:", "Example 1\nOutput:")):
            second = "Output" if text.endswith("Input:") else "Input"
            return f" case {rng.randrange(100)}\n{second}: answer {rng.randrange(100)}\n\nTask: next"
        if text.endswith("\nAnswers:\nAnswer 1:"):
            return self._repair(text)
        chosen = rng.sample(TASKS, self.tasks_per_call)
        if re.search(r"Task \d+:$", text):  # an instruction-only list: continue it
            number = int(re.findall(r"Task (\d+):$", text)[0])
            lines = [chosen[0][0]] + [f"Task {number + i}: {t[0]}" for i, t in enumerate(chosen[1:], start=1)]
            return " " + "\n".join(lines)
        in_context = re.findall(r"^Instruction: (.*)$", text, flags=re.MULTILINE)
        if in_context:  # small teachers copy their examples: the filters must catch it
            copied = in_context[rng.randrange(len(in_context))]
            chosen[-1] = (copied, "", "A copied answer.")
        if self.lose_outputs:
            chosen = [(ins, inp, "" if i % 2 else out) for i, (ins, inp, out) in enumerate(chosen)]
        blocks = [f"{ins}\nInput: {inp or '<noinput>'}\nOutput: {out}\n" for ins, inp, out in chosen]
        number = len(in_context) + 2
        body = blocks[0] + "".join(f"\nTask {number + i}\nInstruction: {b}" for i, b in enumerate(blocks[1:]))
        return " " + body

    def _repair(self, text: str) -> str:
        """Answers to a repair prompt's tasks (those after its last 'Tasks:'), numbered as asked."""
        asked = re.findall(r"^Instruction: (.*)$", text.rsplit("\nTasks:\n", 1)[-1], flags=re.MULTILINE)
        answers = [(n, self.repair_answer.format(instruction=ins)) for n, ins in enumerate(asked, start=1)]
        lines = [f"Answer {n}: {answer}" for n, answer in answers if answer]
        return " " + "\n".join(lines).removeprefix("Answer 1: ") if lines else ""


def _vocabulary() -> list[str]:
    words = re.findall(r"[a-z]{4,}", bundled_path("seed_tasks.jsonl").read_text(encoding="utf-8").lower())
    banned = {"image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "maps", "draw", "plot"}
    return sorted(set(words) - banned)


class ShapedEngine(ScriptedEngine):
    """An option for request-shaping tests (tests/test_shaping.py): a teacher whose yield depends on the request's
    shape by construction. It writes five tasks of random seed words (so that ROUGE-L rejects almost none), of which
    only ``complete_when(shown)`` have an output, ``shown`` being the in-context tasks the prompt showed; an answer
    longer than the request's max_tokens (whitespace words) is cut there, losing its later tasks."""

    def __init__(self, complete_when: Any = lambda shown: max(0, 5 - shown), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.complete_when = complete_when
        self.vocabulary = _vocabulary()

    def _answer(self, text: str, rng: random.Random) -> str:
        shown = len(re.findall(r"^Instruction: ", text, flags=re.MULTILINE))
        complete = self.complete_when(shown)
        blocks = []
        for i in range(5):
            output = f"Here is answer {i}." if i < complete else ""
            blocks.append(f"Explain {' '.join(rng.sample(self.vocabulary, 7))}.\nInput: <noinput>\nOutput: {output}\n")
        number = shown + 2
        return " " + blocks[0] + "".join(f"\nTask {number + i}\nInstruction: {b}" for i, b in enumerate(blocks[1:]))
