"""The filter stage of a round: parse problems, heuristics, then the similarity rule, in plan order.

The similarity pool holds the seeds' instructions and every earlier instruction that passed (as the
original Self-Instruct: an instruction joins the pool when it passes, even if its instances fail later).
Candidates of the same round are compared with each other too, because each one joins the pool as it
passes.

- ``method: self-instruct``: ROUGE-L above 0.7 against the pool rejects (exactly the original rule);
- ``method: sedi``: ROUGE-L above 0.85, then an embedding near-duplicate rule (cosine above
  ``filter.embedding_threshold``, via FAISS); a candidate the embedding rule rejects never joins the
  pool. Rule ``embedding`` counts what the embedding rule removed beyond ROUGE-L.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from diversity import ALPACA_RULES, SELF_INSTRUCT_RULES, DiversityFilter, RougeFilter, first_failed_rule
from diversity.instance_filters import filter_instances
from sedi.candidates import Candidate, Verdict
from sedi.config import SediConfig

TRUNCATED_RESPONSE = "truncated_response"
SIMILAR = "rouge"

Detail = dict[str, object]
EncodeFn = Callable[[Sequence[str]], Any]


class _Similarity(Protocol):
    def check(self, text: str) -> tuple[str | None, Detail]:
        """(the rule that rejects ``text`` or None, details); a passing text joins the pool."""
        ...


class _RougeOnly:
    def __init__(self, threshold: float, pool: Sequence[str]) -> None:
        self.rouge = RougeFilter(threshold, list(pool))

    def check(self, text: str) -> tuple[str | None, Detail]:
        verdict = self.rouge.check(text)  # a passing text joins the pool here
        detail: Detail = {"rouge": round(verdict.max_score, 6), "nearest": verdict.nearest_text}
        return (None if verdict.kept else SIMILAR), detail


class _RougeAndEmbedding:
    def __init__(self, threshold: float, embedding_threshold: float | None, pool: Sequence[str], encode: EncodeFn):
        self.filter = DiversityFilter(threshold, embedding_threshold, list(pool), encoder=encode)
        self.text_of = dict(zip(self.filter.ids, self.filter.texts, strict=True))

    def check(self, text: str) -> tuple[str | None, Detail]:
        verdict = self.filter.check(text)
        if verdict.kept:
            self.text_of[verdict.id] = text
        nearest = None if verdict.rouge_nearest_id is None else self.text_of.get(verdict.rouge_nearest_id)
        detail: Detail = {"rouge": round(verdict.rouge_score, 6), "nearest": nearest}
        if verdict.cosine is not None and verdict.embedding_nearest_id is not None:
            detail["cosine"] = round(float(verdict.cosine), 6)
            detail["nearest_by_embedding"] = self.text_of.get(verdict.embedding_nearest_id)
        return verdict.rule, detail


class TaskFilter:
    """Heuristics + similarity against a growing pool; one instance per run, rebuilt on resume."""

    def __init__(self, config: SediConfig, pool: Sequence[str], encode: EncodeFn | None = None) -> None:
        base = ALPACA_RULES if config.filter.heuristics == "alpaca" else SELF_INSTRUCT_RULES
        extra = tuple(config.filter.extra_keywords)
        self.rules = replace(base, keywords=base.keywords + extra) if extra else base
        self.threshold = config.filter.threshold_for(config.method)
        self.drop_truncated_responses = config.filter.truncated == "drop_response"
        self.needs_instances = config.generation.prompt_style == "self-instruct"
        embedding = config.filter.embedding_threshold
        self.similarity: _Similarity
        if config.method == "sedi" and embedding is not None:
            if encode is None:
                raise ValueError("method 'sedi' with filter.embedding_threshold needs an encoder")
            self.similarity = _RougeAndEmbedding(self.threshold, embedding, pool, encode)
        else:
            self.similarity = _RougeOnly(self.threshold, pool)

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
        similar, detail = self.similarity.check(candidate.instruction)
        if similar is not None:
            return Verdict("rejected", similar, detail)
        if self.needs_instances:
            return Verdict("pending", None, detail, pooled=True)
        instances = filter_instances([(candidate.input, candidate.output)])
        if instances.task_rule is not None:
            return Verdict("rejected", instances.task_rule, detail, pooled=True)
        return Verdict("kept", None, detail, pooled=True)
