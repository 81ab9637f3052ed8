"""The filter stage on plain candidates: parse problems, heuristics, ROUGE-L against seeds and earlier tasks,
and Self-Instruct's instance post-filters."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diversity import VectorIndex
from diversity.instance_filters import (
    CONFLICTING_OUTPUTS,
    COPIES_EXAMPLE,
    EMPTY_OUTPUT,
    ENDS_WITH_COLON,
    NO_INSTANCE,
    OUTPUT_EQUALS_INPUT,
    filter_instances,
)
from sedi.config.model import load_config
from sedi.config.seeds import load_seed_tasks
from sedi.stages.filtering import TaskFilter
from sedi.store.candidates import Candidate


def candidate(i: int, instruction: str, output: str = "An answer.", *, problem: str | None = None) -> Candidate:
    return Candidate(i, "key", i, 0, instruction, "", output, problem, truncated_response=False)


def test_instance_post_filters() -> None:
    verdict = filter_instances(
        [("", ""), ("same", "same"), ("Text:", "x"), ("a", "b"), ("a", "b"), ("c", "d"), ("", "copied")],
        prompt_examples={"copied"},
    )
    assert verdict.kept == [("a", "b"), ("c", "d")]
    assert dict(verdict.dropped) == {0: EMPTY_OUTPUT, 1: OUTPUT_EQUALS_INPUT, 2: ENDS_WITH_COLON, 6: COPIES_EXAMPLE}
    assert verdict.task_rule is None
    assert filter_instances([("a", "b"), ("c", "d")], max_kept=1).kept == [("a", "b")]


def test_conflicting_outputs_drop_the_task_but_open_ended_tasks_may_differ() -> None:
    conflict = filter_instances([("2+2", "4"), ("2+2", "5")])
    assert conflict.kept == [] and conflict.task_rule == CONFLICTING_OUTPUTS
    open_ended = filter_instances([("", "Walk daily."), ("", "Sleep well.")])
    assert len(open_ended.kept) == 2
    assert filter_instances([]).task_rule == NO_INSTANCE
    assert filter_instances([("", ""), ("x:", "y")]).task_rule == NO_INSTANCE
    assert filter_instances([("", "")]).task_rule == EMPTY_OUTPUT


def test_self_instruct_filter_rejects_seed_copies_and_in_round_duplicates() -> None:
    config = load_config(None, ["method=self-instruct"])
    seeds = load_seed_tasks(None)
    task_filter = TaskFilter(config, [t.instruction for t in seeds])
    assert task_filter.threshold == 0.7
    seed = seeds[3].instruction
    fresh = "Describe how a bicycle gear system helps riders climb steep hills."
    verdicts = task_filter.judge(
        [
            candidate(1, seed),
            candidate(2, fresh),
            candidate(3, fresh.replace("steep", "very steep")),
            candidate(4, "Draw a map of your town."),
            candidate(5, "Hi."),
            candidate(6, "Explain why the sky is", problem="truncated"),
            candidate(7, "List three fruits that are rich in vitamin C.", output=""),
        ]
    )
    by_id = dict(verdicts)
    assert by_id[1].verdict == "rejected" and by_id[1].rule == "rouge"
    assert by_id[1].detail is not None and by_id[1].detail["nearest"] == seed and by_id[1].detail["rouge"] == 1.0
    assert by_id[2].verdict == "kept" and by_id[2].pooled
    assert by_id[3].rule == "rouge" and by_id[3].detail is not None and by_id[3].detail["nearest"] == fresh
    assert by_id[4].rule is not None and by_id[4].rule.startswith("keyword")
    assert by_id[5].rule == "too_short"
    assert by_id[6].rule == "truncated" and not by_id[6].pooled
    # alpaca style (the default): the instance comes with the task and is post-filtered
    assert by_id[7].verdict == "rejected" and by_id[7].rule == EMPTY_OUTPUT and by_id[7].pooled


def test_relaxed_threshold_keeps_what_the_baseline_rejects_and_instruction_only_tasks_wait() -> None:
    a = "Write a short poem about the ocean at night."
    b = "Write a short poem about the ocean in the morning."
    strict = TaskFilter(load_config(None, ["method=self-instruct", "generation.prompt_style=self-instruct"]), [a])
    relaxed_config = ["method=sedi", "generation.prompt_style=self-instruct", "filter.embedding_threshold=null"]
    relaxed = TaskFilter(load_config(None, relaxed_config), [a])
    assert strict.judge([candidate(1, b)])[0][1].rule == "rouge"
    kept = relaxed.judge([candidate(1, b)])[0][1]
    assert kept.verdict == "pending" and kept.pooled  # instances come from a later call


def test_drop_whole_truncated_responses_when_configured() -> None:
    config = load_config(None, ["method=self-instruct", "filter.truncated=drop_response"])
    task_filter = TaskFilter(config, [])
    cut = Candidate(1, "k", 0, 0, "Name the largest planet in the solar system.", "", "Jupiter.", None, True)
    assert task_filter.judge([cut])[0][1].rule == "truncated_response"


class CountingEncoder:
    """Deterministic vectors from a word hash (no model needed); counts the texts it was asked to embed.
    Texts that share most words get close vectors, so the embedding rule has something to catch."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1.0
        return out


def test_a_saved_pool_index_is_reused_only_for_the_same_pool(tmp_path: Path) -> None:
    config = load_config(None, ["method=sedi", "filter.embedding_threshold=0.9", "filter.embedding_index=hnsw"])
    seeds = [t.instruction for t in load_seed_tasks(None)][:30]
    first_round = [candidate(i, f"Describe the history of {topic} in a few sentences.") for i, topic in
                   enumerate(["jazz", "chess", "tea", "paper", "the bicycle"])]  # fmt: skip
    first = TaskFilter(config, seeds, CountingEncoder(), index_dir=tmp_path)
    verdicts = first.judge(first_round)
    first.save()
    pooled = [c.instruction for c, (_, v) in zip(first_round, verdicts, strict=True) if v.pooled]
    assert 0 < len(pooled) < len(first_round)  # the ROUGE-L rule caught some, so the pool is a true subset
    saved = VectorIndex.load(tmp_path / "pool")
    assert saved.kind == "hnsw" and saved.ids.tolist() == list(range(len(seeds) + len(pooled)))

    resumed_encoder, rebuilt_encoder = CountingEncoder(), CountingEncoder()
    resumed = TaskFilter(config, seeds + pooled, resumed_encoder, index_dir=tmp_path)
    rebuilt = TaskFilter(config, seeds + pooled, rebuilt_encoder)  # no saved index: embeds the whole pool
    assert resumed_encoder.embedded == [] and len(rebuilt_encoder.embedded) == len(seeds) + len(pooled)
    texts = ["Describe the history of jazz in a few short sentences.", "Name three rivers in Africa.", seeds[3] + "!"]
    second_round = [candidate(10 + i, text) for i, text in enumerate(texts)]
    assert resumed.judge(second_round) == rebuilt.judge(second_round)

    other = CountingEncoder()  # a different pool (one text short): the saved index must not be used
    TaskFilter(config, seeds + pooled[:-1], other, index_dir=tmp_path)
    assert len(other.embedded) == len(seeds) + len(pooled) - 1
    (tmp_path / "pool" / "state.json").write_bytes(b"torn")  # an unreadable index is rebuilt, never trusted
    torn = CountingEncoder()
    TaskFilter(config, seeds + pooled, torn, index_dir=tmp_path)
    assert len(torn.embedded) == len(seeds) + len(pooled)
