"""The filter stage on plain candidates: parse problems, heuristics, ROUGE-L against seeds and earlier tasks,
and Self-Instruct's instance post-filters."""

from __future__ import annotations

from diversity.instance_filters import (
    CONFLICTING_OUTPUTS,
    COPIES_EXAMPLE,
    EMPTY_OUTPUT,
    ENDS_WITH_COLON,
    NO_INSTANCE,
    OUTPUT_EQUALS_INPUT,
    filter_instances,
)
from sedi.candidates import Candidate
from sedi.config import load_config
from sedi.filtering import TaskFilter
from sedi.tasks import load_seed_tasks


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
