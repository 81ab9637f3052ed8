"""The filter stage of a round: parse problems, heuristics, then the similarity rule, in plan order.

The similarity pool holds the seeds' instructions and every earlier instruction that passed (as the
original Self-Instruct: an instruction joins the pool when it passes, even if its instances fail later).
Candidates of the same round are compared with each other too, because each one joins the pool as it
passes.

- ``method: self-instruct``: ROUGE-L above 0.7 against the pool rejects (exactly the original rule);
- ``method: sedi``: ROUGE-L above 0.85, then an embedding near-duplicate rule (cosine above
  ``filter.embedding_threshold``, via FAISS); a candidate the embedding rule rejects never joins the
  pool. Rule ``embedding`` counts what the embedding rule removed beyond ROUGE-L. ``filter.embedding_rule:
  every-method`` applies it under ``method: self-instruct`` too (``sedi compare``'s relaxed-filter-only arm).

With ``generation.repair: batched``, a candidate that lost only its output (``missing_output``, or cut inside its
output) is judged on its instruction like any other; if it passes it joins the pool and waits (verdict
``pending``, rule ``awaiting_repair``) for :mod:`sedi.stages.repair`, which applies :func:`output_verdict` to the output
it obtains.

The pool's vectors are saved with the run after every filter stage (the index directory
``RUN_DIR/index/pool``, with ``pool.json`` saying what it was built from). Each save appends only the
vectors that joined the pool since the previous one (:mod:`diversity.index_store`: a rewrite per round
would cost 1.5 GB at a million 384-d vectors). A resumed run loads it when it was built from exactly the
pool being rebuilt (same texts in the same order, same embedding model and precision), so no pool vector is
embedded again; when only ``filter.embedding_index`` changed, the stored vectors are re-indexed as the new
kind. In any other case the index is rebuilt from the embedding cache. A ``pool.npz`` left by an earlier
version is read the same way and replaced by the directory at the next save.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from diversity import ALPACA_RULES, SELF_INSTRUCT_RULES, DiversityFilter, RougeFilter, VectorIndex, first_failed_rule
from diversity.decontaminate import Decontaminator
from diversity.instance_filters import filter_instances
from sedi.base.files import fsync_write
from sedi.base.vocabulary import EncodeFn
from sedi.config.model import SediConfig
from sedi.stages.decontaminate import CONTAMINATED, match_detail
from sedi.stages.parsing import NO_OUTPUT, TRUNCATED, TRUNCATED_OUTPUT
from sedi.store.candidates import Candidate, Verdict

TRUNCATED_RESPONSE = "truncated_response"
SIMILAR = "rouge"
# generation.repair: a candidate that lost only its output waits (verdict 'pending') for sedi.stages.repair.
AWAITING_REPAIR = "awaiting_repair"
REPAIRABLE = {NO_OUTPUT: NO_OUTPUT, TRUNCATED_OUTPUT: TRUNCATED}  # parse problem -> the rule it is rejected by

Detail = dict[str, object]


class _Similarity(Protocol):
    def check(self, text: str) -> tuple[str | None, Detail]:
        """(the rule that rejects ``text`` or None, details); a passing text joins the pool."""
        ...

    def save(self) -> None: ...


class _RougeOnly:
    def __init__(self, threshold: float, pool: Sequence[str]) -> None:
        self.rouge = RougeFilter(threshold, list(pool))

    def check(self, text: str) -> tuple[str | None, Detail]:
        verdict = self.rouge.check(text)  # a passing text joins the pool here
        detail: Detail = {"rouge": round(verdict.max_score, 6), "nearest": verdict.nearest_text}
        return (None if verdict.kept else SIMILAR), detail

    def save(self) -> None:
        """ROUGE-L keeps no index worth saving."""


def _built_from(config: SediConfig, pool: Sequence[str]) -> dict[str, object]:
    """What a saved pool index must have been built from to be reused."""
    digest = hashlib.sha256("\x00".join(pool).encode()).hexdigest()
    settings = config.filter
    return {
        "count": len(pool),
        "texts_sha256": digest,
        "embedding_model": settings.embedding_model,
        "embedding_precision": settings.embedding_precision,
        "embedding_backend": settings.embedding_backend,
        "index": settings.embedding_index,
    }


class _RougeAndEmbedding:
    def __init__(self, config: SediConfig, pool: Sequence[str], encode: EncodeFn, index_dir: Path | None) -> None:
        self.config, self.index_dir = config, index_dir
        settings = config.filter
        self.filter = DiversityFilter(
            settings.threshold_for(config.method),
            settings.embedding_threshold,
            list(pool),
            encoder=encode,
            index_kind=settings.embedding_index,
            pool_index=self._saved_index(pool),
        )
        self.text_of = dict(zip(self.filter.ids, self.filter.texts, strict=True))

    def _saved_index(self, pool: Sequence[str]) -> VectorIndex | None:
        if self.index_dir is None or not (self.index_dir / "pool.json").is_file():
            return None
        try:
            recorded = json.loads((self.index_dir / "pool.json").read_text(encoding="utf-8"))
            wanted = _built_from(self.config, pool)
            if {**recorded, "index": None} != {**wanted, "index": None}:
                return None  # another pool (e.g. killed between saving and marking the round) or other settings
            path = self.index_dir / "pool"
            if not path.is_dir():
                path = self.index_dir / "pool.npz"  # written by an earlier version
            kind = self.config.filter.embedding_index
            index = VectorIndex.load(path, kind=None if recorded["index"] == kind else kind)
        except (OSError, ValueError, KeyError):  # unreadable or torn: rebuild, which is always correct
            return None
        return index if index.ids.tolist() == list(range(len(pool))) else None

    def save(self) -> None:
        """Write the pool's index, then the record of what it holds (a torn pair never matches on resume)."""
        index = self.filter.index
        if self.index_dir is None or index is None:
            return
        index.save(self.index_dir / "pool")
        fsync_write(self.index_dir / "pool.json", json.dumps(_built_from(self.config, self.filter.texts)))
        (self.index_dir / "pool.npz").unlink(missing_ok=True)  # migrated: the directory holds it all now

    def check(self, text: str) -> tuple[str | None, Detail]:
        # Pool ids are join positions, so a filter rebuilt on resume numbers the pool the same way.
        verdict = self.filter.check(text, id=len(self.filter))
        if verdict.kept:
            self.text_of[verdict.id] = text
        nearest = None if verdict.rouge_nearest_id is None else self.text_of.get(verdict.rouge_nearest_id)
        detail: Detail = {"rouge": round(verdict.rouge_score, 6), "nearest": nearest}
        if verdict.cosine is not None and verdict.embedding_nearest_id is not None:
            detail["cosine"] = round(float(verdict.cosine), 6)
            detail["nearest_by_embedding"] = self.text_of.get(verdict.embedding_nearest_id)
        return verdict.rule, detail


class TaskFilter:
    """Heuristics, decontamination, then similarity against a growing pool; one instance per run, rebuilt on
    resume. ``index_dir``: where the embedding pool's index is saved (:meth:`save`) and looked for on resume;
    ``decontaminator``: evaluation items a candidate must not copy (:mod:`sedi.stages.decontaminate`)."""

    def __init__(
        self,
        config: SediConfig,
        pool: Sequence[str],
        encode: EncodeFn | None = None,
        index_dir: Path | None = None,
        decontaminator: Decontaminator | None = None,
    ) -> None:
        self.decontaminator = decontaminator
        base = ALPACA_RULES if config.filter.heuristics == "alpaca" else SELF_INSTRUCT_RULES
        extra = tuple(config.filter.extra_keywords)
        self.rules = replace(base, keywords=base.keywords + extra) if extra else base
        self.threshold = config.filter.threshold_for(config.method)
        self.drop_truncated_responses = config.filter.truncated == "drop_response"
        self.needs_instances = config.generation.prompt_style == "self-instruct"
        self.repair = config.generation.repair == "batched" and not self.needs_instances
        embedding = config.filter.embedding_threshold
        self.similarity: _Similarity
        if embedding is not None and (config.method == "sedi" or config.filter.embedding_rule == "every-method"):
            if encode is None:
                raise ValueError("method 'sedi' with filter.embedding_threshold needs an encoder")
            self.similarity = _RougeAndEmbedding(config, pool, encode, index_dir)
        else:
            self.similarity = _RougeOnly(self.threshold, pool)

    def save(self) -> None:
        """Save what the similarity rule can reuse on resume (the embedding pool's index)."""
        self.similarity.save()

    def judge(self, candidates: Sequence[Candidate]) -> list[tuple[int, Verdict]]:
        """Verdicts for one round's candidates, in the given (plan) order; passing ones join the pool."""
        return [(c.id, self._judge_one(c)) for c in candidates]

    def _judge_one(self, candidate: Candidate) -> Verdict:
        problem = candidate.problem
        dropped = self.drop_truncated_responses and candidate.truncated_response
        repairable = self.repair and problem in REPAIRABLE and not dropped
        if problem is not None and not repairable:
            return Verdict("rejected", REPAIRABLE.get(problem, problem))
        if self.drop_truncated_responses and candidate.truncated_response:
            return Verdict("rejected", TRUNCATED_RESPONSE)
        rule = first_failed_rule(candidate.instruction, self.rules)
        if rule is not None:
            return Verdict("rejected", rule, None if problem is None else {"problem": problem})
        # Before the similarity rule, so that a copy of an evaluation item never joins the pool.
        copied = None if self.decontaminator is None else self.decontaminator.check(candidate)
        if copied is not None:
            return Verdict("rejected", CONTAMINATED, match_detail(copied))
        similar, detail = self.similarity.check(candidate.instruction)
        if similar is not None:
            return Verdict("rejected", similar, detail if problem is None else {**detail, "problem": problem})
        if problem is not None:  # joined the pool like any passing instruction; sedi.stages.repair asks for its output
            return Verdict("pending", AWAITING_REPAIR, {**detail, "problem": problem}, pooled=True)
        if self.needs_instances:
            return Verdict("pending", None, detail, pooled=True)
        return output_verdict(candidate.input, candidate.output, detail)


def output_verdict(
    input_text: str, output: str, detail: Detail, prompt_examples: frozenset[str] = frozenset()
) -> Verdict:
    """The output rules of a task whose instruction passed (it is in the pool): Self-Instruct's instance filters
    on its one (input, output) pair; ``prompt_examples``: outputs copied from the prompt's own examples fail."""
    instances = filter_instances([(input_text, output)], prompt_examples=prompt_examples)
    if instances.task_rule is not None:
        return Verdict("rejected", instances.task_rule, detail, pooled=True)
    return Verdict("kept", None, detail, pooled=True)
