"""Self-Instruct / Alpaca heuristic filters: each rule fires on a realistic instruction and not on a near miss.

Reference behaviour (self-instruct bootstrap_instructions.py, stanford_alpaca generate_instruction.py):
``len(inst.split())`` <= 3 or > 150; each blacklist keyword as ``re.search(r"\\b(kw)\\b", inst, re.IGNORECASE)``;
``inst.startswith("Write a program")`` (case-sensitive); ``inst[0] in string.punctuation``;
``not inst[0].isascii()``; in that order.
"""

from __future__ import annotations

import dataclasses

import pytest

from diversity.heuristics import (
    ALPACA_EXTRA_KEYWORDS,
    ALPACA_RULES,
    SELF_INSTRUCT_KEYWORDS,
    SELF_INSTRUCT_RULES,
    HeuristicRules,
    first_failed_rule,
    rule_names,
)

FIRES = [
    ("Sort the list.", "too_short"),
    ("Summarize:this,text,now", "too_short"),  # one whitespace-separated word, however many tokens
    ("Describe the image below in one sentence.", "keyword:image"),
    ("Describe this Image in one sentence.", "keyword:image"),  # case-insensitive
    ("Compare these two images and list the differences.", "keyword:images"),  # \bimage\b does not match "images"
    ("Which country is shown on the map?", "keyword:map"),
    ("Explain the map's legend to a child.", "keyword:map"),  # the apostrophe is a word boundary
    ("Open the file and count the lines.", "keyword:file"),
    ("Summarize the plot of the movie Inception.", "keyword:plot"),  # the references drop these too
    ("Go to the kitchen and describe what you see.", "keyword:go to"),
    ("Draw a map of the picture you took.", "keyword:picture"),  # first keyword in list order wins
    ("Write a program to plot a sine wave.", "keyword:plot"),  # keywords are checked before the prefix
    ("Write a program that prints the first ten prime numbers.", "write_a_program"),
    ("  Write a program that reverses a string.  ", "write_a_program"),  # the references strip first
    ('"Quote" the following sentence back to me.', "leading_punctuation"),
    ("(Optional) Describe your morning routine briefly.", "leading_punctuation"),
    ("¿Cómo se dice hello en español?", "non_ascii_start"),  # '¿' is not ASCII punctuation
    ("Éxplain the rules of chess briefly.", "non_ascii_start"),
]

# Near misses: these pass, exactly as in the references (whole-word matching, case-sensitive prefix).
PASSES = [
    "Sort the given list.",  # four words
    "Sort these: a, b",  # four whitespace-separated words
    "Update your profile description in one sentence.",  # "profile" is not the word "file"
    "Explain how mapping functions work in Python.",  # "Mapping" is not the word "map"
    "Rename the variable file_name to something clearer.",  # "_" is a word character: no boundary
    "Imagine you are a pirate and introduce yourself.",  # "Imagine" is not "image"
    "Give three tips for graphic design.",  # "graphic" is not "graph"
    "Describe a drawback of remote work.",  # "drawback" is not "draw"
    "Explain why going to bed early is healthy.",  # "going to" is not "go to"
    "Write a Python program that sorts numbers.",  # the prefix is literal
    "write a program that sorts numbers.",  # ... and case-sensitive
    "1. List three fruits that are red.",  # digits are not punctuation
    "Explain the café culture of Paris.",  # only the first character must be ASCII
    "Compose a short music review of your favourite album.",  # "music" is only on Alpaca's list
]


@pytest.mark.parametrize(("instruction", "rule"), FIRES)
def test_rule_fires(instruction: str, rule: str) -> None:
    assert first_failed_rule(instruction) == rule
    assert first_failed_rule(instruction, ALPACA_RULES) == rule  # Alpaca only adds keywords


@pytest.mark.parametrize("instruction", PASSES)
def test_near_miss_passes(instruction: str) -> None:
    assert first_failed_rule(instruction) is None


def test_word_count_limits_are_inclusive_exclusive() -> None:
    assert first_failed_rule(" ".join(["word"] * 150)) is None
    assert first_failed_rule(" ".join(["word"] * 151)) == "too_long"
    assert first_failed_rule("Name three\tprimary\ncolors.") is None  # any whitespace separates words
    assert first_failed_rule("") == "too_short"
    assert first_failed_rule("   ") == "too_short"


@pytest.mark.parametrize("keyword", ALPACA_EXTRA_KEYWORDS)
def test_alpaca_adds_keywords(keyword: str) -> None:
    instruction = f"Describe the {keyword} in a few friendly words."
    assert first_failed_rule(instruction, ALPACA_RULES) == f"keyword:{keyword}"
    assert first_failed_rule(instruction, SELF_INSTRUCT_RULES) is None


@pytest.mark.parametrize("keyword", SELF_INSTRUCT_KEYWORDS)
def test_every_self_instruct_keyword_fires_as_a_whole_word(keyword: str) -> None:
    assert first_failed_rule(f"Please {keyword.upper()} something for me today.") == f"keyword:{keyword}"
    assert first_failed_rule(f"Please {keyword}x something for me today.") is None


def test_rules_are_configurable() -> None:
    rules = dataclasses.replace(
        SELF_INSTRUCT_RULES,
        too_short_words=5,
        keywords=("essay",),
        banned_prefixes=("Write a program", "Create a function"),
        reject_leading_punctuation=False,
    )
    assert first_failed_rule("Give me five words.", rules) == "too_short"
    assert first_failed_rule("Write an essay about the ocean please.", rules) == "keyword:essay"
    assert first_failed_rule("Describe the image below in detail please.", rules) is None
    assert first_failed_rule("Create a function that adds two numbers.", rules) == "create_a_function"
    assert first_failed_rule('"Quote" the following sentence back to me.', rules) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.max_words = 10  # type: ignore[misc]
    assert rule_names(rules) == [
        "too_short",
        "too_long",
        "keyword:essay",
        "write_a_program",
        "create_a_function",
        "non_ascii_start",
    ]
    assert HeuristicRules() == SELF_INSTRUCT_RULES


def test_rule_names_cover_every_result() -> None:
    names = set(rule_names(ALPACA_RULES))
    assert {first_failed_rule(text, ALPACA_RULES) for text, _ in FIRES} <= names
    assert len(rule_names(SELF_INSTRUCT_RULES)) == 2 + len(SELF_INSTRUCT_KEYWORDS) + 3
