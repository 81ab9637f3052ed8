"""The named arms of a comparison: ONE table, read by ``sedi compare``, the benchmark scripts and the report.

An arm is a name, one line saying what it is, and its settings as ``dotted.key=value`` overrides applied on top
of the user's base config (the same syntax as ``--set``). An arm may extend another: its parent's overrides
apply first, then its own. Adding an arm is one entry in :data:`ARMS`.

The baseline arms pin every setting that defines the baseline (method, prompt style, similarity rule, in-context
mix, truncation handling) to the value the Self-Instruct/Alpaca baseline has always had, so a later change of
the product's defaults never leaks into the baseline. ``default`` has no overrides at all: it is exactly what
``sedi run`` does with the user's config, so a comparison always measures the product as shipped.

Every arm then gets the comparison's run controls (:func:`resolve`: run.seed, unbounded rounds, the stop rule),
identically and in this one place, so arms differ only in their own overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from sedi.config.model import SediConfig, apply_overrides
from sedi.exceptions import ConfigError

StopAt = Literal["kept", "budget"]
# Rounds are not the stopping rule in a comparison; this only bounds a run whose filters keep nothing.
UNBOUNDED_ROUNDS = 1000
# --stop-at budget: the kept target must never be what stops a run.
NO_KEPT_TARGET = 10**9


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    overrides: tuple[str, ...] = ()
    extends: str | None = None  # an arm whose overrides apply first


# The Self-Instruct/Alpaca baseline as `sedi compare` has always run it: one call writes whole tasks, ROUGE-L 0.7
# (the original rule) without the embedding rule, 6 human + 2 machine tasks in context, the incomplete last task
# of a truncated response dropped (Alpaca), no output repair and no learned request shapes. Sampling, teacher,
# budget and student stay the user's: every arm shares them, so the arms differ in the method alone.
_BASELINE = (
    "method=self-instruct",
    "generation.prompt_style=alpaca",
    "generation.human_in_context=6",
    "generation.machine_in_context=2",
    "filter.rouge_threshold=0.7",
    "filter.embedding_rule=sedi",
    "filter.heuristics=self-instruct",
    "filter.truncated=drop_last_item",
    # Product additions that would change the baseline: off, as it always ran ('off' quoted: YAML reads off as false).
    "generation.repair='off'",
    "generation.shaping=fixed",
    "generation.max_task_chars=null",
)

# The plain settings of the shape learned shaping chose in 2 of 3 seeds (show4-le400c-ask8-512tok), fixed: a saving
# any generator gets from them is not a mechanism's (docs/results.md).
_SHORT = (
    "generation.human_in_context=3",
    "generation.machine_in_context=1",
    "generation.max_task_chars=400",
    "generation.sampling.max_tokens=512",
)

ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("self-instruct", "Self-Instruct/Alpaca baseline: one call writes whole tasks, ROUGE-L 0.7.", _BASELINE),
        Arm(
            "self-instruct-published",
            "Self-Instruct as published: instruction-only calls, then a classification and an instance call per task.",
            ("generation.prompt_style=self-instruct", "instances.classify=true"),
            extends="self-instruct",
        ),
        Arm(
            "sedi-paper",
            "SeDi as the paper states it: uniform in-context draw from the whole seed pool, no steering.",
            ("method=sedi", "feedback.in_context=pool", "feedback.steer=false"),
        ),
        Arm(
            "sedi-steer",
            "SeDi with prompts steered by yield (the old `sedi` arm).",
            ("feedback.in_context=pool", "feedback.steer=true"),
            extends="sedi-paper",
        ),
        Arm("default", "Exactly what `sedi run` does with the user's config: no overrides."),
        Arm(
            "relaxed-filter-only",
            "The baseline with SeDi's relaxed filter alone: ROUGE-L 0.85 plus the embedding rule.",
            ("filter.rouge_threshold=0.85", "filter.embedding_rule=every-method"),
            extends="self-instruct",
        ),
        Arm(
            "repair-only",
            "The baseline with output repair: lost outputs of good instructions asked for in batched requests.",
            ("generation.repair=batched",),
            extends="self-instruct",
        ),
        Arm(
            "shaping-only",
            "The baseline with learned request shapes (what a prompt shows and asks for, chosen by kept per call).",
            ("generation.shaping=learn",),
            extends="self-instruct",
        ),
        Arm(
            "self-instruct-short",
            "The baseline with the plain settings of the shape learned shaping chose most: 4 tasks shown (3 human, "
            "1 machine) of at most 400 characters, 512 completion tokens.",
            _SHORT,
            extends="self-instruct",
        ),
        Arm(
            "default-short",
            "The default with the plain settings of self-instruct-short, in one fixed shape.",
            (*_SHORT, "generation.shaping=fixed"),
            extends="default",
        ),
        Arm("default-repair", "The default with output repair on.", ("generation.repair=batched",), extends="default"),
        Arm(
            "default-fixed",
            "The default with every request in the settings' one shape ('fixed': the default until 2026-12-07).",
            ("generation.shaping=fixed",),
            extends="default",
        ),
        # Since 2026-12-07 the same config as `default`; kept so the commands of earlier results still run it.
        Arm("default-shaping", "The default with learned request shapes.", ("generation.shaping=learn",), "default"),
        Arm(
            "in-context-split",
            "sedi-paper showing 6 human and 2 promoted seeds in context (Self-Instruct's mix).",
            ("feedback.in_context=split",),
            extends="sedi-paper",
        ),
    )
}
DEFAULT_ARMS = ("self-instruct", "default")
# Names whose meaning changed: refused, since silently running something else under an old name is worse.
RETIRED = {"sedi": "'sedi' is no longer an arm: use 'sedi-steer' (steered prompts, its old meaning) or 'default'"}


def overrides(name: str) -> tuple[str, ...]:
    """Every override of arm ``name``, its ancestors' first."""
    arm = ARMS[name]
    return (overrides(arm.extends) if arm.extends else ()) + arm.overrides


def parse_arms(text: str, option: str = "--arms") -> list[str]:
    """Comma-separated arm names, checked: the first is the baseline. A one-line ConfigError (exit 2) on an
    unknown, retired or repeated name, before anything runs."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"{option}: no arm given: choose from {', '.join(ARMS)}")
    for name in names:
        if name in RETIRED:
            raise ConfigError(f"{option} {name}: {RETIRED[name]}")
        if name not in ARMS:
            raise ConfigError(f"{option} {name!r}: unknown arm: choose from {', '.join(ARMS)}")
    if len(set(names)) < len(names):
        raise ConfigError(f"{option} {text!r}: an arm is named twice: name each once")
    return names


def run_controls(seed: int, stop_at: StopAt) -> tuple[str, ...]:
    """What a comparison sets on every arm alike: the run seed, unbounded rounds and the stop rule."""
    controls = (f"run.seed={seed}", f"run.max_rounds={UNBOUNDED_ROUNDS}")
    return controls + ((f"generation.target_kept={NO_KEPT_TARGET}",) if stop_at == "budget" else ())


def resolve(base: SediConfig, name: str, seed: int, stop_at: StopAt) -> SediConfig:
    """Arm ``name``'s config: ``base``, then the arm's overrides, then the comparison's run controls."""
    data: dict[str, Any] = base.model_dump(mode="json")
    apply_overrides(data, [*overrides(name), *run_controls(seed, stop_at)])
    try:
        return SediConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"arm {name!r}: field '{field}': {first['msg']}: fix the base config or the arm") from None
