"""The table of named arms (arms.py): ``default`` is exactly ``sedi run`` with no settings, the baseline arms pin
what defines them, ``--arms`` is checked before anything runs, and the relaxed-filter-only arm filters as it says."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sedi.config.model import load_config
from sedi.exceptions import ConfigError
from sedi.experiment.arms import ARMS, DEFAULT_ARMS, overrides, parse_arms, resolve, run_controls
from sedi.stages.filtering import TaskFilter
from sedi.store.candidates import Candidate
from tests.helpers import invoke

# What a comparison sets on every arm, the default one included: nothing else may differ from `sedi run`.
RUN_CONTROLS = {("run", "seed"), ("run", "max_rounds"), ("generation", "target_kept")}


def _without_controls(data: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    for section, key in RUN_CONTROLS:
        data[section][key] = like[section][key]
    return data


@pytest.mark.parametrize("stop_at", ["kept", "budget"])
def test_the_default_arm_is_sedi_run_with_no_settings(stop_at: Any) -> None:
    shipped = load_config(None).model_dump(mode="json")  # what `sedi run` runs with no config and no --set
    arm = resolve(load_config(None), "default", 7, stop_at).model_dump(mode="json")
    assert arm["run"]["seed"] == 7 and arm["run"]["max_rounds"] == 1000
    assert arm != shipped  # the run controls are set ...
    assert _without_controls(arm, shipped) == shipped  # ... and they are the only difference
    named = {tuple(item.split("=", 1)[0].split(".")) for item in run_controls(7, stop_at)}
    assert named <= RUN_CONTROLS and overrides("default") == ()


def test_every_arm_gets_the_same_run_controls_and_only_its_own_overrides() -> None:
    base = load_config(None, ["budget.max_calls=64", "generation.calls_per_round=16"])
    configs = {name: resolve(base, name, 3, "budget").model_dump(mode="json") for name in ARMS}
    for name, data in configs.items():
        assert (data["run"]["seed"], data["run"]["max_rounds"]) == (3, 1000), name
        assert data["generation"]["target_kept"] == 10**9 and data["budget"]["max_calls"] == 64, name
        assert data["generation"]["calls_per_round"] == 16 and data["student"] == configs["default"]["student"]
    methods = {name: data["method"] for name, data in configs.items()}
    assert methods == {"self-instruct": "self-instruct", "self-instruct-published": "self-instruct",
                       "sedi-paper": "sedi", "sedi-steer": "sedi", "default": "sedi",
                       "relaxed-filter-only": "self-instruct", "in-context-split": "sedi",
                       "repair-only": "self-instruct", "shaping-only": "self-instruct",
                       "self-instruct-short": "self-instruct", "default-short": "sedi",
                       "default-repair": "sedi", "default-fixed": "sedi", "default-shaping": "sedi"}  # fmt: skip
    paper, split, steer = configs["sedi-paper"], configs["in-context-split"], configs["sedi-steer"]
    assert (paper["feedback"]["in_context"], paper["feedback"]["steer"]) == ("pool", False)
    assert (steer["feedback"]["in_context"], steer["feedback"]["steer"]) == ("pool", True)
    assert split["feedback"]["in_context"] == "split"
    split["feedback"]["in_context"] = "pool"
    assert split == paper  # the split arm differs from the method as stated in its in-context tasks only
    published = configs["self-instruct-published"]
    assert published["generation"]["prompt_style"] == "self-instruct"
    published["generation"]["prompt_style"] = "alpaca"
    assert published == configs["self-instruct"]
    relaxed = configs["relaxed-filter-only"]
    assert (relaxed["filter"]["rouge_threshold"], relaxed["filter"]["embedding_rule"]) == (0.85, "every-method")
    relaxed["filter"] |= {"rouge_threshold": 0.7, "embedding_rule": "sedi"}
    assert relaxed == configs["self-instruct"]
    for arm, parent, key, value in [
        ("repair-only", "self-instruct", "repair", "batched"),
        ("shaping-only", "self-instruct", "shaping", "learn"),
        ("default-repair", "default", "repair", "batched"),
        ("default-fixed", "default", "shaping", "fixed"),
    ]:  # each ablation differs from its parent in its one mechanism only
        ablation = configs[arm]
        assert ablation["generation"][key] == value != configs[parent]["generation"][key]
        ablation["generation"][key] = configs[parent]["generation"][key]
        assert ablation == configs[parent], arm
    assert configs["default"]["generation"]["shaping"] == "learn" and configs["default-shaping"] == configs["default"]
    short = configs["self-instruct-short"]  # the baseline with the chosen shape's plain settings, nothing else
    generation = short["generation"]
    shown = (generation["human_in_context"], generation["machine_in_context"], generation["max_task_chars"])
    assert (shown, generation["sampling"]["max_tokens"]) == ((3, 1, 400), 512)
    assert configs["self-instruct"]["generation"]["max_task_chars"] is None
    generation |= {key: configs["self-instruct"]["generation"][key] for key in generation}
    assert short == configs["self-instruct"]
    default_short = configs["default-short"]  # the same settings on the default, in one fixed shape, nothing else
    differ = {k for k, v in default_short["generation"].items() if v != configs["default"]["generation"][k]}
    assert differ == {"human_in_context", "machine_in_context", "max_task_chars", "sampling", "shaping"}
    assert default_short["generation"]["shaping"] == "fixed"
    default_short["generation"] |= {key: configs["default"]["generation"][key] for key in differ}
    assert default_short == configs["default"]
    assert all(arm.description and "\n" not in arm.description for arm in ARMS.values())


def test_the_baseline_pins_what_defines_it_against_changed_defaults() -> None:
    changed = ["filter.rouge_threshold=0.5", "generation.human_in_context=3", "filter.embedding_rule=every-method"]
    changed += ["filter.truncated=drop_response", "generation.prompt_style=self-instruct"]
    changed += ["generation.repair=batched", "generation.shaping=learn", "generation.max_task_chars=300"]
    baseline = resolve(load_config(None, changed), "self-instruct", 0, "kept")
    shipped = resolve(load_config(None), "self-instruct", 0, "kept")
    assert baseline == shipped and baseline.filter.threshold_for(baseline.method) == 0.7
    assert (baseline.generation.repair, baseline.generation.shaping) == ("off", "fixed")  # additions stay off
    assert baseline.generation.max_task_chars is None
    assert resolve(load_config(None, changed), "default", 0, "kept").filter.rouge_threshold == 0.5  # the user's own


def test_arms_are_parsed_and_checked() -> None:
    assert parse_arms(" self-instruct, sedi-paper ,default,") == ["self-instruct", "sedi-paper", "default"]
    assert list(DEFAULT_ARMS) == ["self-instruct", "default"]
    with pytest.raises(ConfigError, match=r"--arms 'sedi-pape': unknown arm: choose from self-instruct, "):
        parse_arms("self-instruct,sedi-pape")
    with pytest.raises(ConfigError, match="named twice"):
        parse_arms("default,default")
    with pytest.raises(ConfigError, match="no arm given"):
        parse_arms(" , ")


def test_unknown_and_retired_arms_stop_compare_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    code, err = invoke(["compare", "--run-dir", str(out), "--arms", "self-instruct,nope"], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--arms 'nope': unknown arm: choose from" in err and all(name in err for name in ARMS)
    code, err = invoke(["compare", "--run-dir", str(out), "--arms", "self-instruct,sedi"], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'sedi' is no longer an arm" in err and "sedi-steer" in err and "'default'" in err
    assert not out.exists()  # nothing ran, nothing was paid for


def _bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """Vectors from hashed words (no model): texts with the same words get the same vector, in any order."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1.0
    return out


def _candidate(i: int, instruction: str) -> Candidate:
    return Candidate(i, "key", i, 0, instruction, "", "An answer.", None, truncated_response=False)


def test_relaxed_filter_only_gives_the_baseline_the_relaxed_filter() -> None:
    seed = "Write a short poem about the quiet sea at night"
    reordered = "About the quiet sea at night write a short poem"  # the same words (ROUGE-L 0.6), another order
    near = "Write a short poem about the calm ocean at night"  # ROUGE-L 0.8: between 0.7 and 0.85
    verdicts = {}
    for arm in ("self-instruct", "relaxed-filter-only"):
        config = resolve(load_config(None), arm, 0, "kept")
        task_filter = TaskFilter(config, [seed], _bag_of_words)
        verdicts[arm] = [(v.verdict, v.rule) for _, v in task_filter.judge([_candidate(1, near)])]
        verdicts[arm] += [(v.verdict, v.rule) for _, v in task_filter.judge([_candidate(2, reordered)])]
    assert verdicts["self-instruct"][0] == ("rejected", "rouge")  # the original rule: above 0.7
    assert verdicts["relaxed-filter-only"][0] == ("kept", None)  # relaxed: 0.85
    assert verdicts["self-instruct"][1] == ("kept", None)  # ROUGE-L alone misses a reordering
    assert verdicts["relaxed-filter-only"][1] == ("rejected", "embedding")  # the embedding rule catches it
