"""The request shapes ``generation.shaping: learn`` chooses among, and the parameters of its rule.

Kept apart from :mod:`sedi.config.model` (which uses :class:`ShapesConfig`) so that each config module stays small; like
it, this imports nothing from the code it configures. The rule is :mod:`feedback.shaping`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sedi.config.teacher import _Strict


class PromptShape(_Strict):
    """One shape of a generation request."""

    in_context: int = Field(
        8, ge=1, le=50, description="Tasks the prompt shows (human and machine, as the method draws)."
    )
    max_task_chars: int | None = Field(
        None,
        ge=1,
        description="Longest in-context task this shape draws, in characters of instruction + input + output "
        "(longer ones are left out of its prompts; fewer are shown while too few are short enough). null: any.",
    )
    tasks_per_call: int = Field(8, ge=1, le=50, description="New tasks a chat prompt asks for (as tasks_per_call).")
    max_tokens: int = Field(
        384, ge=1, description="Completion token limit of the request (the budget reserves this request's own)."
    )

    @property
    def name(self) -> str:
        """How the run database (``requests.shape``), status and the report name the shape."""
        chars = "any" if self.max_task_chars is None else f"le{self.max_task_chars}c"
        return f"show{self.in_context}-{chars}-ask{self.tasks_per_call}-{self.max_tokens}tok"


def derived_shapes(settings: PromptShape) -> list[PromptShape]:
    """The shapes ``learn`` chooses among when ``generation.shapes.options`` is not given: the one the settings give,
    then shorter prompts scaled from it, so that a user's own in-context count, max_tokens and tasks per call bound
    every request (a teacher with a small context window stays within it)."""

    # From today's default settings (8 shown, ask 8, 384 tokens) these are the four shapes measured on 2026-12-07:
    # on the bundled 270M teacher, prompts of long human seeds (967 prompt tokens) were cut at max_tokens in 68% of
    # requests and kept 1.63 tasks per request, against 52% and 2.37 for prompts of two short machine tasks (826
    # tokens). Half of the 175 shipped seeds are at most 333 characters.
    def cap(limit: int) -> int:
        return limit if settings.max_task_chars is None else min(limit, settings.max_task_chars)

    half, quarter = max(1, settings.in_context // 2), max(1, settings.in_context // 4)
    shapes = [
        settings,
        PromptShape(
            in_context=settings.in_context,
            max_task_chars=cap(400),
            tasks_per_call=settings.tasks_per_call,
            max_tokens=settings.max_tokens,
        ),
        PromptShape(
            in_context=half,
            max_task_chars=cap(400),
            tasks_per_call=settings.tasks_per_call,
            max_tokens=settings.max_tokens * 4 // 3,
        ),
        PromptShape(
            in_context=quarter,
            max_task_chars=cap(300),
            tasks_per_call=max(1, settings.tasks_per_call // 2),
            max_tokens=max(1, settings.max_tokens * 2 // 3),
        ),
    ]
    return list({shape.name: shape for shape in shapes}.values())  # distinct, in this order


DERIVED = len(derived_shapes(PromptShape()))  # derived_shapes gives at most this many (4: none coincide)


class ShapesConfig(_Strict):
    """``generation.shaping: learn``: the shapes and the rule that learns which keeps the most tasks per dollar."""

    options: list[PromptShape] | None = Field(
        None,
        min_length=2,
        max_length=8,
        description="The shapes to choose among (2 to 8, distinct). null: derived from the generation settings: "
        "theirs (with the defaults 8 tasks of any length shown, ask 8, 384 tokens), the same of at most 400 "
        "characters, half as many shown with 4/3 the max_tokens, a quarter as many of at most 300 characters asking "
        "half as many in 2/3 the max_tokens.",
    )
    min_tries: int = Field(2, ge=1, le=50, description="Requests each shape gets before the rule compares them.")
    floor: float = Field(
        0.05,
        ge=0,
        le=0.5,
        description="Least share of all generation requests each shape keeps (exploration); floor times the number "
        "of shapes must be at most 1.",
    )
    prior: float = Field(
        2.0, gt=0, le=100, description="Weight of the prior, in requests, centred on the pooled kept per request."
    )

    @model_validator(mode="after")
    def _sound(self) -> ShapesConfig:
        names = [s.name for s in self.options or []]
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"shape {twice} is listed twice: list each shape once")
        count = DERIVED if self.options is None else len(self.options)
        if self.floor * count > 1:
            raise ValueError(
                f"floor {self.floor} times {count} shapes is over 1: lower floor to at most {1 / count:.3f} or list "
                "fewer shapes"
            )
        return self
