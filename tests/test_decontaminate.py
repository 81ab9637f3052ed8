"""Decontamination catches planted copies of evaluation items, leaves unrelated tasks alone, and reads every format.

The evaluation set is the bundled held-out file (Self-Instruct's user-oriented tasks) unless a test plants its own.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diversity.decontaminate import ContaminationMatch, Decontaminator, EvalFileError, EvalItem, load_eval_items, words

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "sedi" / "data" / "user_oriented_instructions.jsonl"
SEEDS = REPO / "sedi" / "data" / "seed_tasks.jsonl"


@cache
def heldout() -> Decontaminator:
    return Decontaminator(load_eval_items(HELDOUT))


def long_item(checker: Decontaminator, min_prompt_words: int = 40) -> tuple[int, EvalItem]:
    """The first held-out item whose prompt (instruction + input) has at least ``min_prompt_words`` words."""
    return next(
        (i, item)
        for i, item in enumerate(checker.items)
        if len(words(item.instruction) + words(item.input)) >= min_prompt_words
    )


def test_verbatim_copy_is_caught_and_names_the_heldout_line() -> None:
    checker = heldout()
    item = checker.items[17]
    copy = EvalItem("candidate", item.instruction.upper(), "  " + item.input, item.output + " ")
    assert checker.check(copy) == ContaminationMatch("user_oriented_instructions.jsonl:line 18", 17, "exact", 1.0)


def test_copied_output_under_a_new_prompt_is_caught_by_ngrams() -> None:
    checker = heldout()
    index, item = next((i, it) for i, it in enumerate(checker.items) if len(words(it.output)) >= 30)
    found = checker.check(EvalItem("c", "Write something about an unrelated topic, please.", "", item.output))
    assert found is not None and found.measure == "ngram" and found.item_index == index
    assert found.score == len(set(zip(*(words(item.output)[k:] for k in range(13)), strict=False)))


def test_near_copy_with_every_tenth_word_changed_is_caught_by_rouge() -> None:
    checker = heldout()
    index, item = long_item(checker)
    changed = " ".join(w if i % 10 != 9 else "zzz" for i, w in enumerate(f"{item.instruction} {item.input}".split()))
    # No 13 consecutive words survive, so only the similarity measure can see the copy.
    found = checker.check(EvalItem("c", changed, "", "A different answer."))
    assert found is not None and (found.measure, found.item_index) == ("rouge", index)
    assert 0.85 < found.score < 1.0
    assert Decontaminator(checker.items, rouge_threshold=None).check(EvalItem("c", changed)) is None


def test_near_copy_with_a_few_words_changed_is_caught() -> None:
    checker = heldout()
    index, item = long_item(checker)
    tokens = f"{item.instruction} {item.input}".split()
    tokens[3], tokens[len(tokens) // 2] = "banana", "kiwi"
    found = checker.check(EvalItem("c", " ".join(tokens), "", item.output))
    assert found is not None and found.item_index == index and found.measure == "ngram"


def test_bundled_seeds_and_unrelated_tasks_are_not_flagged() -> None:
    checker = heldout()
    assert checker.check_seeds(load_eval_items(SEEDS)) == []
    unrelated = [
        EvalItem("a", "Explain how a refrigerator keeps food cold.", "", "It pumps heat out of the box."),
        EvalItem("b", "Answer the following question.", "What is the capital of Peru?", "Lima."),
        EvalItem("c", "Sort these numbers.", "5, 3, 9", "3, 5, 9"),
    ]
    assert checker.check_many(unrelated) == [None, None, None]


def test_an_overlapping_seed_is_reported_with_its_position() -> None:
    checker = heldout()
    seeds = [*load_eval_items(SEEDS)[:3], checker.items[40]]
    hits = checker.check_seeds(seeds)
    assert [(hit.seed_index, hit.match.item_id) for hit in hits] == [(3, "user_oriented_instructions.jsonl:line 41")]


def test_instruction_only_rouge_flags_the_generic_bundled_seed() -> None:
    """Why prompts are compared by default: seed 48 shares only its generic instruction with held-out item 89."""
    checker = Decontaminator(heldout().items, rouge_on="instruction")
    hits = checker.check_seeds(load_eval_items(SEEDS))
    assert [(hit.seed_index, hit.match.item_index, hit.match.measure) for hit in hits] == [(48, 89, "rouge")]


def test_short_items_are_caught_when_copied_but_not_by_a_few_shared_words() -> None:
    tiny = EvalItem("tiny", "Name a colour.", "", "Red")  # 4 words: only an exact copy counts
    short = EvalItem("short", "Convert to Celsius.", "212 Fahrenheit", "100 degrees")  # 7 words: whole sequence
    checker = Decontaminator([tiny, short])
    assert checker.check(EvalItem("c", "name a COLOUR", "", "Blue")) == ContaminationMatch("tiny", 0, "exact", 1.0)
    assert checker.check(EvalItem("c", "Please name a colour red or blue for the flag.", "", "Red.")) is None
    embedded = EvalItem("c", "Repeat this text.", "", "Here: convert to celsius 212 fahrenheit 100 degrees. Done.")
    assert checker.check(embedded) == ContaminationMatch("short", 1, "ngram", 1.0)
    assert checker.check(EvalItem("c", "Repeat this text.", "", "convert to celsius 212 fahrenheit")) is None


def test_min_overlap_needs_that_many_shared_ngrams() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    item = EvalItem("item", "Continue.", "", text)
    candidate = EvalItem("c", "Other.", "", " ".join(text.split()[:14]) + " and then something else entirely")
    assert Decontaminator([item], n=13).check(candidate) == ContaminationMatch("item", 0, "ngram", 2.0)
    assert Decontaminator([item], n=13, min_overlap=3).check(candidate) is None
    # Items at least n words long are indexed whatever min_short says.
    assert Decontaminator([item], n=3, min_short=50).check(EvalItem("c", "", "", "w7 w8 w9")) is not None


def test_words_normalise_case_width_and_accents_but_keep_them() -> None:
    assert words("CAFÉ ｆｕｌｌ-width, naïve!") == ["café", "full", "width", "naïve"]
    assert words("Straße") == ["strasse"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=30), min_size=1, max_size=6),
    st.lists(st.integers(0, 5), min_size=0, max_size=40),
    st.integers(2, 6),
)
def test_ngram_hits_equal_a_brute_force_set_intersection(items: list[list[int]], cand: list[int], n: int) -> None:
    def grams(tokens: list[str], k: int) -> set[tuple[str, ...]]:
        return {tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}

    texts = [[f"t{x}" for x in item] for item in items]
    candidate = [f"t{x}" for x in cand]
    # Empty instructions: prompts never match exactly, so only the n-gram measure speaks.
    checker = Decontaminator([EvalItem(str(i), "", "", " ".join(t)) for i, t in enumerate(texts)], n=n, min_short=1)
    found = checker.check(EvalItem("c", "", "", " ".join(candidate)))
    counts = [len(grams(t, n) & grams(candidate, n)) if len(t) >= n else 0 for t in texts]
    if max(counts) > 0:
        assert found is not None and found.measure == "ngram" and found.score == max(counts)
        assert found.item_index == counts.index(max(counts))
    else:
        short = [i for i, t in enumerate(texts) if 0 < len(t) < n and tuple(t) in grams(candidate, len(t))]
        assert (found.item_index if found else None) == (min(short) if short else None)


# --- Loaders -------------------------------------------------------------------------------------------


def test_jsonl_reads_flat_rows_and_self_instruct_instances(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    rows = [
        {"instruction": "Add.", "input": "2+2", "output": "4"},
        {},
        {"instruction": "Greet.", "instances": [{"input": "Ann", "output": "Hi Ann"}, {"output": "Hi"}]},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows).replace("{}", ""), encoding="utf-8")
    assert load_eval_items(path) == [
        EvalItem("eval.jsonl:line 1", "Add.", "2+2", "4"),
        EvalItem("eval.jsonl:line 3#0", "Greet.", "Ann", "Hi Ann"),
        EvalItem("eval.jsonl:line 3#1", "Greet.", "", "Hi"),
    ]
    assert load_eval_items(HELDOUT)[0].id == "user_oriented_instructions.jsonl:line 1"
    assert len(load_eval_items(HELDOUT)) == 252


def test_csv_counts_lines_across_quoted_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_text('Instruction,output\n"Write\ntwo lines.",ok\n\nSay hi.,hi\n', encoding="utf-8")
    assert load_eval_items(path, label="mine") == [
        EvalItem("mine:line 2", "Write\ntwo lines.", "", "ok"),
        EvalItem("mine:line 5", "Say hi.", "", "hi"),
    ]


@pytest.fixture
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_dataset`` on a folder writes a cache: keep it in the test's directory."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


@pytest.mark.usefixtures("datasets_cache")
def test_dataset_folders_saved_or_of_data_files(tmp_path: Path) -> None:
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_list(
        [{"instruction": "A.", "output": "a"}, {"instruction": "B.", "output": "b"}]
    ).save_to_disk(saved)
    assert [item.id for item in load_eval_items(saved)] == ["saved:row 0", "saved:row 1"]
    files = tmp_path / "files"
    files.mkdir()
    (files / "test.jsonl").write_text(json.dumps({"instruction": "C.", "input": "c"}) + "\n", encoding="utf-8")
    assert load_eval_items(files) == [EvalItem("files:row 0", "C.", "c", "")]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("eval.jsonl", '{"prompt": "x"}\n', "eval.jsonl: line 1: field 'instruction' is missing"),
        ("eval.jsonl", '{"instruction": ""}\n', "eval.jsonl: line 1: field 'instruction' is empty"),
        ("eval.jsonl", '{"instruction": "x", "output": 3}\n', "field 'output' must be a string, got int"),
        ("eval.jsonl", '{"instruction": "x", "instances": []}\n', "field 'instances' must be a non-empty list"),
        ("eval.jsonl", '{"instruction": "x", "instances": [{"output": 1}]}\n', "line 1: instances[0]: field 'output'"),
        ("eval.jsonl", "\n{nope\n", "eval.jsonl: line 2: invalid JSON"),
        ("eval.jsonl", "\n", "eval.jsonl: no rows"),
        ("eval.csv", "question,answer\nx,y\n", "eval.csv: line 1: no column 'instruction' (header: question, answer)"),
        ("eval.csv", 'instruction\n"open\n', "eval.csv: line 2: malformed CSV"),
        ("eval.txt", "x\n", "unknown extension '.txt': use .jsonl or .csv"),
    ],
)
def test_bad_files_name_the_file_the_field_and_the_fix(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalFileError) as caught:
        Decontaminator.from_files([path])
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message.strip()
    assert isinstance(caught.value, ValueError)


@pytest.mark.usefixtures("datasets_cache")
def test_missing_paths_and_folders_without_the_column_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EvalFileError, match=r"gone\.jsonl: evaluation file not found: fix the path"):
        load_eval_items(tmp_path / "gone.jsonl")
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"prompt": "x"}]).save_to_disk(folder)
    with pytest.raises(EvalFileError, match=r"saved: no column 'instruction' \(columns: prompt\)"):
        load_eval_items(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalFileError, match=r"empty: no dataset in the folder"):
        load_eval_items(tmp_path / "empty")


def test_check_many_agrees_with_check_one_at_a_time() -> None:
    checker = heldout()
    rng = random.Random(5)
    tasks = [checker.items[i] for i in rng.sample(range(len(checker)), 5)]
    tasks += [EvalItem("u", f"Describe object number {i} in detail.") for i in range(5)]
    assert checker.check_many(tasks) == [checker.check(task) for task in tasks]
