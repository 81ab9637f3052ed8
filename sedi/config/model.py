"""The one config tree of a run: pydantic models with ``extra="forbid"``, every field documented.

The defaults are the *embedded* run: the bundled Gemma-3-270m base model served locally as the
teacher, a small budget, CPU-friendly sizes. A YAML file overrides any subset, and ``--set a.b=v``
overrides that. Every field is written to the run directory so a run records what produced it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from feedback import FeedbackConfig
from sedi.config.filter import FilterConfig
from sedi.config.run import RunConfig
from sedi.config.shaping import PromptShape, ShapesConfig, derived_shapes
from sedi.config.student import StudentConfig
from sedi.config.teacher import BudgetConfig, TeacherConfig, _Strict
from sedi.config.yaml_source import read_config_file
from sedi.exceptions import ConfigError


# What a shell accepts as an environment variable name (POSIX), so no API key can pass for one.
class SamplingConfig(_Strict):
    """Sampling parameters of generation requests; every one is part of the cache key."""

    # Self-Instruct used temperature 0.7 and top_p 0.5 on GPT-3. On the bundled 270M base model those
    # settings loop: 3 calls gave 24 items but only 2 distinct new tasks, against 15 of 18 at 1.0 / 0.9
    # (same prompts and seeds). Both methods share these settings, so comparisons stay fair.
    temperature: float = Field(
        1.0, ge=0, le=2, description="Sampling temperature (Self-Instruct used 0.7 on GPT-3; see the comment)."
    )
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass (Self-Instruct used 0.5 on GPT-3).")
    max_tokens: int = Field(
        384,
        ge=1,
        description="Completion token limit per request. The budget reserves it as the request's worst "
        "case before sending, so a token or cost cap is never exceeded.",
    )
    # Self-Instruct's 2 breaks the alpaca fields on the bundled teacher: on the same 40 prompts and request seeds
    # it kept 0.32x the tasks per request of 0 (0.20 to 0.49; missing outputs 39% -> 61% of items), and 1 made no
    # clear difference (1.05x, 0.74 to 1.54). scripts/bench_sampling_streams.py, 2026-12-07.
    presence_penalty: float = Field(
        0.0, ge=-2, le=2, description="OpenAI presence penalty (Self-Instruct used 2 on GPT-3; see the comment)."
    )
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI frequency penalty.")
    stop: list[str] = Field(
        default_factory=lambda: ["Task 16", "\n\n\n"],
        description="Stop sequences. The defaults let a numbered list run up to the 16th item; Self-Instruct's "
        "blank-line stop cut lists short (about 2 tasks per call on the bundled model).",
    )


class GenerationConfig(_Strict):
    """How new tasks are requested from the teacher."""

    calls_per_round: int = Field(4, ge=1, description="Teacher requests planned per round (all go through the budget).")
    human_in_context: int = Field(6, ge=0, description="Human seed tasks shown in each prompt (Self-Instruct: 6).")
    machine_in_context: int = Field(
        2,
        ge=0,
        description="Machine-generated tasks shown in each prompt, fewer while there are none (Self-Instruct: 2).",
    )
    # A plain setting any generator could use, so that a saving from shorter examples can be tried on the baseline
    # too (issue 23): the learned shapes that kept most showed tasks of at most 400 characters.
    max_task_chars: int | None = Field(
        None,
        ge=1,
        description="Longest task a prompt shows, in characters of instruction + input + output (longer ones are "
        "left out; fewer are shown while too few are short enough). null: any. With shaping 'learn' each shape "
        "has its own.",
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Sampling parameters of generation requests."
    )
    # Alpaca's one-call style is the default because it is the cheapest in calls per complete task: on the
    # bundled teacher it yields about 4 full tasks per call, while the Self-Instruct style yields about 7.6
    # instructions per call but then pays 2 more calls per task (classification + instances).
    prompt_style: Literal["alpaca", "self-instruct"] = Field(
        "alpaca",
        description="'alpaca': one call writes whole tasks (instruction, input, output); 'self-instruct': calls "
        "write instructions only, then each kept instruction gets a classification call and an instance call.",
    )
    tasks_per_call: int = Field(
        8,
        ge=1,
        le=50,
        description="New tasks a chat prompt asks for. Completion prompts instead let the list run until a "
        "stop sequence or sampling.max_tokens.",
    )
    target_kept: int = Field(
        1000, ge=1, description="Stop once this many tasks are kept (or earlier, on budget or max_rounds)."
    )
    # Request shaping (issue 23): what a prompt shows and asks for decides much of what is kept (sedi.config.shaping).
    # 'learn' by default since 2026-12-07: at 3 seeds x 150 calls on the bundled teacher it needed 0.67x the fixed
    # default's calls per kept task (0.58-0.77) and 0.69x the baseline's (0.57-0.83), held-out loss +1.1%; the
    # baseline fixed to the shape it chose saves as much (0.63x), which docs/results.md reports beside it. Learning
    # finds that shape for whatever teacher is configured; the settings' own shape is always one of the options.
    shaping: Literal["fixed", "learn"] = Field(
        "learn",
        description="'fixed': every request has the shape the settings above give; 'learn': each takes one of "
        "shapes.options, chosen by the kept tasks per dollar (per call without teacher.prices) of each shape's "
        "requests in earlier rounds (feedback.shaping).",
    )
    shapes: ShapesConfig = Field(default_factory=ShapesConfig, description="The shapes and rule of shaping 'learn'.")
    # Output repair (stages.repair): on the bundled teacher 29-35% of alpaca candidates lack an output and 9-14% are
    # cut inside their last output, often with a good instruction; repair asks for the missing outputs instead of
    # throwing the paid instruction away. Off until a benchmark decides the default.
    repair: Literal["off", "batched"] = Field(
        "off",
        description="'batched': a candidate with no output (or cut off inside its output) whose instruction passes "
        "every instruction rule waits for repair: one more request per repair_per_call such tasks asks the teacher "
        "for their outputs, which then pass the same output rules. 'off': such candidates are rejected. Ignored "
        "with prompt_style 'self-instruct', where every instruction already gets an instance call.",
    )
    # 8 matches tasks_per_call: a teacher that writes 8 whole tasks in one answer can write 8 outputs, and each
    # request re-sends its few-shot header, so fewer per call pays that prompt more often. More per call makes one
    # cut answer (max_tokens) lose more outputs; 32 bounds the tokens one repair request reserves from the budget.
    repair_per_call: int = Field(
        8,
        ge=1,
        le=32,
        description="Tasks whose outputs one repair request asks for (generation.repair 'batched').",
    )

    @field_validator("repair", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 (PyYAML) reads a bare `off` as false: `repair: off` in a file or --set must mean 'off'.
        return "off" if value is False else value

    def fixed_shape(self) -> PromptShape:
        """The shape every request has with ``shaping: fixed`` (what the settings above give)."""
        return PromptShape(
            in_context=min(50, max(1, self.human_in_context + self.machine_in_context)),
            max_task_chars=self.max_task_chars,
            tasks_per_call=self.tasks_per_call,
            max_tokens=self.sampling.max_tokens,
        )

    def shape_options(self) -> list[PromptShape]:
        """The shapes ``shaping: learn`` chooses among: ``shapes.options``, or derived from the settings above."""
        return list(self.shapes.options) if self.shapes.options is not None else derived_shapes(self.fixed_shape())


class InstanceConfig(_Strict):
    """Instance generation for instruction-only prompts (generation.prompt_style 'self-instruct')."""

    max_per_task: int = Field(5, ge=1, le=20, description="Most instances kept per task (Self-Instruct: 5).")
    max_tokens: int = Field(
        300, ge=1, description="Completion token limit of one instance-generation request (the budget reserves it)."
    )
    classify: bool = Field(
        True,
        description="Ask the teacher whether each task is classification (one short call per task), to write "
        "its instances output-first as Self-Instruct does. False: every task is written input-first.",
    )
    # Self-Instruct decoded instances greedily on GPT-3. On the bundled 270M teacher greedy decoding echoed
    # the '<noinput>' marker as the answer for 8 of 8 tasks (measured), while 0.7 wrote actual answers.
    temperature: float = Field(
        0.7, ge=0, le=2, description="Sampling temperature of instance requests (Self-Instruct: 0; see the comment)."
    )


class TrainingBatchConfig(_Strict):
    """How kept tasks are grouped into training batches (method 'sedi': one task per cluster per batch).
    The batch size is student.train.per_device_batch_size (one composed batch is one micro-batch)."""

    n_clusters: int | None = Field(
        None,
        ge=1,
        description="k-means clusters over the round's kept tasks. Unset: max(batch size, sqrt(tasks)), capped "
        "at the number of tasks, so that a batch can take one task per cluster.",
    )
    leftover: Literal["mix", "drop"] = Field(
        "mix",
        description="When fewer clusters with unused tasks remain than the batch size: 'mix' fills batches "
        "with repeated clusters, spread evenly; 'drop' also drops an incomplete last batch.",
    )


class SeedsConfig(_Strict):
    """Where the human seed tasks and the held-out evaluation tasks come from."""

    path: str | None = Field(
        None,
        description="Seed tasks: JSONL (a file ending in .jsonl; fields instruction, input, output, or instruction "
        "and instances[{input, output}]) or CSV (a file ending in .csv; a header naming the columns instruction "
        "and output, input and id optional); other extensions are refused. "
        "Unset: the 175 Self-Instruct seed tasks shipped with sedi.",
    )
    heldout_path: str | None = Field(
        None,
        description="Held-out evaluation tasks, never used as seeds, in the same JSONL or CSV format. Unset: the "
        "252 user-oriented tasks shipped with sedi.",
    )
    # Every seed is pasted into prompts (6 per generation call), so one huge row multiplies the cost of every
    # call that shows it: a 10 MB row made two prompts of 2.5M tokens. The longest of the 175 shipped seeds is
    # 6,387 characters (instruction + input + output) and of the 252 held-out tasks 3,249: 20,000 leaves room for
    # real tasks with a document as input while refusing a pasted file before it is paid for.
    max_chars: int = Field(
        20_000,
        ge=1,
        description="Most characters in one seed or held-out task (instruction + input + output); a longer row "
        "is refused with its file, line and size before any request. Seed files also refuse identical rows and "
        "control characters (NUL and other C0 codes but tab and line breaks): fix the file.",
    )


class SediConfig(_Strict):
    """Everything one run needs. Load with :func:`load_config`."""

    method: Literal["sedi", "self-instruct"] = Field(
        "sedi",
        description="'sedi': relaxed diversity filter, diverse batches and training feedback; "
        "'self-instruct': the faithful baseline.",
    )
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher API.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Hard spending caps.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Task generation settings.")
    instances: InstanceConfig = Field(
        default_factory=InstanceConfig, description="Instance generation for instruction-only prompts."
    )
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Which generated tasks are kept.")
    training_batches: TrainingBatchConfig = Field(
        default_factory=TrainingBatchConfig, description="How kept tasks are grouped into training batches."
    )
    seeds: SeedsConfig = Field(default_factory=SeedsConfig, description="Seed and held-out task files.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="The student model and its training.")
    feedback: FeedbackConfig = Field(
        default_factory=FeedbackConfig,
        description="method 'sedi': how training signals pick attractive batches and re-select the seed pool.",
    )
    run: RunConfig = Field(default_factory=RunConfig, description="Run-level settings.")

    @model_validator(mode="after")
    def _cost_cap_needs_prices(self) -> SediConfig:
        if self.budget.max_cost_usd is not None and self.teacher.prices is None:
            raise ValueError(
                "budget.max_cost_usd is set but teacher.prices is not: set teacher.prices.prompt and "
                "teacher.prices.completion (USD per million tokens)"
            )
        return self

    @model_validator(mode="after")
    def _stop_rule_needs_heldout(self) -> SediConfig:
        if self.run.stop_when is not None and not self.student.heldout_size:
            raise ValueError(
                "run.stop_when judges held-out evaluations, but student.heldout_size is 0: set "
                "student.heldout_size > 0 or remove run.stop_when"
            )
        return self

    def digest(self) -> str:
        """A short hash of the whole config, for run metadata; over the redacted config (sedi.base.redact), so a URL's
        password cannot be guessed offline from a digest written to the run database or a dataset card. A config
        without credentials hashes as it always did."""
        from sedi.base.redact import redact

        payload = redact(json.dumps(self.model_dump(mode="json"), sort_keys=True))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set budget.max_calls=20")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``dotted.key=value`` items (values parsed as YAML scalars) into a nested dict."""
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


# Keys renamed so that one word means one thing (one precision vocabulary for teacher, student and encoder).
# A user's file with an old key is refused with the new name: an old config never changes meaning silently. A
# run's recorded config was valid when written, so it is read through upgrade_recorded() instead.
# "batch" alone named four things; the Batch API and the training batches now say which.
RENAMED = {
    "teacher.local.dtype": "teacher.local.precision",
    "student.train.bf16": "student.train.precision",
    "teacher.batch": "teacher.batch_api",
    "teacher.batch_poll_s": "teacher.batch_api_poll_s",
    "teacher.prices.batch_discount": "teacher.prices.batch_api_discount",
    "batches": "training_batches",
}
_RENAME_HINTS = {
    "teacher.local.dtype": " (auto, float32 or bfloat16)",
    "student.train.bf16": " (auto, float32 or bfloat16)",
}
_BF16_TO_PRECISION = {True: "bfloat16", False: "float32", "auto": "auto"}


def upgrade_recorded(data: dict[str, Any]) -> dict[str, Any]:
    """A config recorded by an earlier version (run database, exports), with today's keys; a copy."""
    upgraded = json.loads(json.dumps(data))
    if "batches" in upgraded:
        upgraded["training_batches"] = upgraded.pop("batches")
    teacher = upgraded.get("teacher")
    if isinstance(teacher, dict):
        for old, new in (("batch", "batch_api"), ("batch_poll_s", "batch_api_poll_s")):
            if old in teacher:
                teacher[new] = teacher.pop(old)
        prices = teacher.get("prices")  # null when none were given
        if isinstance(prices, dict) and "batch_discount" in prices:
            prices["batch_api_discount"] = prices.pop("batch_discount")
    local = (upgraded.get("teacher") or {}).get("local")
    if isinstance(local, dict) and "dtype" in local:
        local["precision"] = local.pop("dtype")
    generation = upgraded.get("generation")
    if isinstance(generation, dict):
        # Recorded before generation.shaping existed: every request had the settings' one shape. The default is now
        # 'learn', so a missing key must read as what that run did, or its resume would switch plans unasked.
        generation.setdefault("shaping", "fixed")
    train = (upgraded.get("student") or {}).get("train")
    if isinstance(train, dict):
        train.pop("seed", None)  # was always run.seed
        if "bf16" in train:
            train["precision"] = _BF16_TO_PRECISION.get(train.pop("bf16"), "auto")
    return upgraded


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden" and field in RENAMED:
        return f"{source}: '{field}' is now '{RENAMED[field]}'{_RENAME_HINTS.get(field, '')}: rename the key"
    if kind == "extra_forbidden":
        fix = "remove it or fix its spelling (`sedi config show` lists every key)"
        return f"{source}: unknown key '{field}': {fix}"
    msg = first["msg"]
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{source}: field '{field}': {msg}{shown}: fix the value in the file or with --set {field}=..."


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> SediConfig:
    """Defaults, then the YAML file (if any), then ``--set`` overrides; validated as one tree."""
    data = read_config_file(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    if overrides:
        apply_overrides(data, overrides)
        source = f"{source} with --set"
    try:
        return SediConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def dump_config(config: SediConfig) -> str:
    """The effective config as YAML, in field order; URLs without user-info, no credential (sedi.base.redact): it is
    printed, written to config.yaml and the run database, and copied into dataset cards."""
    from sedi.base.redact import redact

    return redact(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
