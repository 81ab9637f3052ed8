"""The filter stage of a round: parse problems, heuristics, then the similarity rule, in plan order.

The similarity pool holds the seeds' instructions and every earlier instruction that passed (as the
original Self-Instruct: an instruction joins the pool when it passes, even if its instances fail later).
Candidates of the same round are compared with each other too, because each one joins the pool as it
passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from diversity import ALPACA_RULES, SELF_INSTRUCT_RULES, RougeFilter, first_failed_rule
from diversity.instance_filters import filter_instances
from sedi.candidates import Candidate, Verdict
from sedi.config import SediConfig

TRUNCATED_RESPONSE = "truncated_response"
SIMILAR = "rouge"


class TaskFilter:
    """Heuristics + ROUGE-L against a growing pool; one instance per run, rebuilt on resume."""

    def __init__(self, config: SediConfig, pool: Sequence[str]) -> None:
        base = ALPACA_RULES if config.filter.heuristics == "alpaca" else SELF_INSTRUCT_RULES
        extra = tuple(config.filter.extra_keywords)
        self.rules = replace(base, keywords=base.keywords + extra) if extra else base
        self.threshold = config.filter.threshold_for(config.method)
        self.drop_truncated_responses = config.filter.truncated == "drop_response"
        self.needs_instances = config.generation.prompt_style == "self-instruct"
        self.max_instances = config.instances.max_per_task
        self.rouge = RougeFilter(self.threshold, list(pool))

    def judge(self, candidates: Sequence[Candidate]) -> list[tuple[int, Verdict]]:
        """Verdicts for one round's candidates, in the given (plan) order; passing ones join the pool."""
        return [(c.id, self._judge_one(c)) for c in candidates]

    def _judge_one(self, candidate: Candidate) -> Verdict:
        if candidate.problem is not None:
            return Verdict("rejected", candidate.problem)
        if self.drop_truncated_responses and candidate.truncated_response:
            return Verdict("rejected", TRUNCATED_RESPONSE)
        rule = first_failed_rule(candidate.instruction, self.rules)
        if rule is not None:
            return Verdict("rejected", rule)
        verdict = self.rouge.check(candidate.instruction)  # a passing instruction joins the pool here
        neighbour = {"rouge": round(verdict.max_score, 6), "nearest": verdict.nearest_text}
        if not verdict.kept:
            return Verdict("rejected", SIMILAR, neighbour)
        if self.needs_instances:
            return Verdict("pending", None, neighbour, pooled=True)
        instances = filter_instances([(candidate.input, candidate.output)])
        if instances.task_rule is not None:
            return Verdict("rejected", instances.task_rule, neighbour, pooled=True)
        return Verdict("kept", None, neighbour, pooled=True)
