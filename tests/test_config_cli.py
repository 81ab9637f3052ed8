"""Config loading, overrides, and the CLI's one-line errors (exit 2, run dir untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from sedi.config.model import SediConfig, load_config
from sedi.config.seeds import load_seed_tasks, load_tasks
from sedi.exceptions import ConfigError
from tests.helpers import invoke, sedi


def _all_fields(model: type[BaseModel]) -> list[tuple[str, object]]:
    out = []
    for name, info in model.model_fields.items():
        out.append((f"{model.__name__}.{name}", info))
        annotation = info.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                out.extend(_all_fields(candidate))
    return out


def test_every_field_has_help_text_and_a_default_and_forbids_extras() -> None:
    fields = _all_fields(SediConfig)
    assert len(fields) > 30
    for name, info in fields:
        assert getattr(info, "description", None), f"{name} has no help text"
        assert not info.is_required(), f"{name} has no default"  # type: ignore[attr-defined]
    assert SediConfig.model_config.get("extra") == "forbid"


def test_required_keys_exist_with_documented_defaults() -> None:
    cfg = SediConfig()
    assert cfg.method == "sedi"
    assert cfg.teacher.api_key_env == "OPENAI_API_KEY"
    assert (cfg.teacher.provider, cfg.teacher.mode) == ("local", "completion")
    assert cfg.teacher.prices is None and cfg.budget.max_calls == 200 and cfg.budget.max_tokens is None
    for key in ("base_url", "model", "concurrency"):
        assert hasattr(cfg.teacher, key)
    assert hasattr(cfg.budget, "max_tokens") and hasattr(cfg.budget, "max_cost_usd") and hasattr(cfg.run, "seed")


def test_yaml_then_set_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method: self-instruct\nteacher:\n  provider: openai\n  concurrency: 3\nbudget: {max_calls: 10}\n")
    cfg = load_config(path, ["budget.max_calls=20", "teacher.prices.prompt=0.5"])
    assert cfg.method == "self-instruct" and cfg.teacher.concurrency == 3
    assert cfg.budget.max_calls == 20
    assert cfg.teacher.prices is not None and cfg.teacher.prices.prompt == 0.5


def test_prompts_show_the_split_by_default_and_steering_needs_the_pool_said(tmp_path: Path) -> None:
    assert SediConfig().feedback.in_context == "split"  # measured fewer calls per kept task than 'pool'
    steered = load_config(None, ["feedback.steer=true", "feedback.in_context=pool"])
    again = SediConfig.model_validate(steered.model_dump(mode="json"))  # a recorded config reads back the same
    assert again.feedback == steered.feedback
    path = tmp_path / "c.yaml"
    for body in ("feedback:\n  steer: true\n  in_context: split\n", "feedback:\n  steer: true\n"):
        path.write_text(body)  # no key changes another: steering alone is refused, not switched to the pool
        with pytest.raises(ConfigError, match=r"c.yaml: .*set feedback.in_context to 'pool'"):
            load_config(path)


def test_renamed_and_no_op_keys_are_refused_in_one_line_and_old_recorded_configs_still_read(tmp_path: Path) -> None:
    from sedi.config.model import upgrade_recorded

    path = tmp_path / "old.yaml"
    for body, said in (
        ("teacher:\n  local:\n    dtype: float32\n", "'teacher.local.dtype' is now 'teacher.local.precision'"),
        ("student:\n  train:\n    bf16: false\n", "'student.train.bf16' is now 'student.train.precision'"),
        ("student:\n  train:\n    seed: 3\n", "student.train.seed does nothing: training follows run.seed"),
        ("teacher:\n  batch: true\n", "'teacher.batch' is now 'teacher.batch_api'"),
        (
            "teacher:\n  prices:\n    prompt: 1\n    batch_discount: 0.4\n",
            "'teacher.prices.batch_discount' is now 'teacher.prices.batch_api_discount'",
        ),
        ("batches:\n  leftover: drop\n", "'batches' is now 'training_batches'"),
    ):
        path.write_text(body)
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        assert said in str(refused.value) and str(path) in str(refused.value) and "\n" not in str(refused.value)
    recorded = SediConfig().model_dump(mode="json")
    assert "seed" not in recorded["student"]["train"]  # not shown as if it were a setting
    recorded["teacher"]["local"]["dtype"] = recorded["teacher"]["local"].pop("precision")
    recorded["student"]["train"].pop("precision")
    recorded["student"]["train"].update(bf16=False, seed=0)
    recorded["batches"] = {**recorded.pop("training_batches"), "leftover": "drop"}
    recorded["teacher"]["batch"] = recorded["teacher"].pop("batch_api")
    assert SediConfig.model_validate(upgrade_recorded(recorded)).teacher.prices is None  # recorded as null
    recorded["teacher"]["prices"] = {"prompt": 1.0, "completion": 2.0, "batch_discount": 0.4}
    old = SediConfig.model_validate(upgrade_recorded(recorded))
    assert old.student.train.precision == "float32" and old.teacher.local.precision == "auto"
    assert old.training_batches.leftover == "drop" and old.teacher.batch_api is False
    assert old.teacher.prices is not None and old.teacher.prices.batch_api_discount == 0.4
    assert recorded["teacher"]["prices"]["batch_discount"] == 0.4  # upgraded in a copy: the record is unchanged
    trained = load_config(None, ["run.seed=7"])
    from sedi.stages.student import train_config

    assert train_config(trained).seed == 7 and train_config(trained).model_dump()["seed"] == 7


@pytest.mark.parametrize("given", ["file", "set"])
def test_the_old_batch_discount_key_stops_a_run_in_one_line_before_any_request(
    tmp_path: Path, given: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sedi.teacher.endpoint import free_port

    path = tmp_path / "sedi.yaml"
    path.write_text("teacher:\n  prices:\n    prompt: 2\n    completion: 8\n")
    if given == "file":
        path.write_text(path.read_text() + "    batch_discount: 0.5\n")
    monkeypatch.setenv("SEDI_TEST_KEY", "sk-test")
    remote = [f"teacher.base_url=http://127.0.0.1:{free_port()}/v1", "teacher.provider=openai"]
    remote += ["teacher.api_key_env=SEDI_TEST_KEY", "teacher.batch_api=true"]
    remote += ["teacher.prices.batch_discount=0.5"] if given == "set" else []
    args = ["run", str(path), "--run-dir", str(tmp_path / "run")]
    code, output = invoke([*args, *(x for item in remote for x in ("--set", item))], capsys, monkeypatch)
    # Nothing listens at the URL: a request sent first would have ended in "teacher unreachable" instead.
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert "'teacher.prices.batch_discount' is now 'teacher.prices.batch_api_discount'" in output
    assert str(path) in output and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "overrides", "pattern"),
    [
        ("teacher:\n  modle: x\n", [], r"c.yaml: unknown key 'teacher.modle'"),
        ("budget:\n  max_calls: -3\n", [], r"c.yaml: field 'budget.max_calls'.*greater than or equal to 0"),
        ("teacher: [unclosed\n", [], r"c.yaml: malformed YAML at line"),
        ("- just\n- a list\n", [], r"expected a mapping"),
        ("budget:\n  max_cost_usd: 5\n", [], r"teacher.prices is not"),
        ("", ["budget.max_tokens"], r"--set 'budget.max_tokens': expected dotted.key=value"),
    ],
)
def test_bad_config_names_file_field_and_fix(tmp_path: Path, text: str, overrides: list[str], pattern: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(path, overrides)
    assert "\n" not in str(err.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(Path("nope.yaml"))


def test_bundled_seeds_load() -> None:
    seeds = load_seed_tasks(None)
    assert len(seeds) == 175
    assert all(t.instruction and t.origin == "human" for t in seeds)
    assert sum(bool(t.input) for t in seeds) == 125


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        (
            '{"instruction": "Do it", "instances": [{"input": ""}]}',
            r"line 2: instances\[0\]: field 'output' is missing",
        ),
        ("{not json", r"line 2: invalid JSON"),
        ('{"instances": []}', r"line 2: field 'instruction' is missing"),
        ('{"instruction": 5, "output": "x"}', r"line 2: field 'instruction' must be a string"),
    ],
)
def test_bad_seed_file_names_line_and_field(tmp_path: Path, line: str, pattern: str) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"instruction": "Say hello.", "input": "", "output": "Hello."}\n' + line + "\n")
    with pytest.raises(ConfigError, match=pattern):
        load_tasks(path)


@pytest.mark.slow
def test_config_show_prints_effective_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("teacher: {concurrency: 7}\n")
    result = sedi("config", "show", str(path), "--set", "run.seed=42", timeout=120)
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["teacher"]["concurrency"] == 7 and shown["run"]["seed"] == 42
    assert SediConfig.model_validate(shown) == load_config(path, ["run.seed=42"])


@pytest.mark.slow
def test_cli_errors_are_one_line_exit_2_and_keep_the_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    precious = run_dir / "kept.jsonl"
    precious.write_text("paid for\n")
    bad_seeds = tmp_path / "seeds.jsonl"
    bad_seeds.write_text('{"instruction": "x"}\n')
    remote = ["--set", "teacher.provider=openai", "--set", "teacher.base_url=https://api.example.invalid/v1"]
    cases = [
        (["run", str(tmp_path / "missing.yaml")], "missing.yaml: config file not found"),
        (["run", "--set", "teacher.bogus=1"], "unknown key 'teacher.bogus'"),
        (["run", "--set", "budget.max_calls=-1"], "field 'budget.max_calls'"),
        (["run", "--set", f"seeds.path={bad_seeds}"], "field 'output' is missing"),
        (["run", *remote], "environment variable $SEDI_TEST_MISSING_KEY is not set"),
    ]
    for args, expected in cases:
        extra = ("--run-dir", str(run_dir), "--set", "teacher.api_key_env=SEDI_TEST_MISSING_KEY")
        result = sedi(*args, *extra, timeout=120)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, result.stderr)
        assert precious.read_text() == "paid for\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["kept.jsonl"]


@pytest.mark.slow
def test_unreachable_teacher_exits_2_with_one_line(tmp_path: Path) -> None:
    from sedi.teacher.endpoint import free_port

    port = free_port()  # nothing listens there
    result = sedi(
        "run", "--run-dir", str(tmp_path / "run"),
        "--set", "teacher.provider=openai", "--set", f"teacher.base_url=http://127.0.0.1:{port}/v1",
        "--set", "teacher.max_retries=1", "--set", "teacher.backoff_base_s=0",
        "--set", "generation.calls_per_round=1", timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: teacher unreachable at http://127.0.0.1:") and "teacher.base_url" in last
    status = sedi("status", str(tmp_path / "run"), "--json", timeout=120)
    summary = json.loads(status.stdout)
    # Both attempts were refused: nothing was sent, so they are on record but not calls.
    assert summary["state"] == "failed" and summary["calls"] == 0 and summary["refused_attempts"] == 2


@pytest.mark.slow
def test_status_of_a_non_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = sedi("status", str(tmp_path), "--json", timeout=120)
    assert result.returncode == 2 and "no sedi run here" in result.stderr


@pytest.mark.slow
def test_the_exit_codes_are_listed_in_run_help_and_the_readme() -> None:
    from sedi.cli.shared import EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_ERROR, EXIT_INTERRUPTED

    shown = sedi("run", "--help", timeout=120)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for code, words in ((0, "finished"), (EXIT_ERROR, "an unexpected error"), (EXIT_BAD_INPUT, "bad input"),
                        (EXIT_BUDGET, "stopped by the budget"), (EXIT_INTERRUPTED, "interrupted")):  # fmt: skip
        assert f"{code} {words}" in text, text
        assert f"\n| {code} |" in readme, code
    assert len({EXIT_ERROR, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_INTERRUPTED, 0}) == 5


def test_the_run_summary_counts_the_students_steps_in_words() -> None:
    from sedi.cli.running import student_line

    summary = {"heldout_loss": 2.5634, "heldout_rouge_l": None, "seed_pool_size": 177, "promotions": 2, "demotions": 0}
    one = student_line({**summary, "train_steps": 1})
    assert one == "student: 1 step, held-out loss 2.563; seed pool 177 (2 promoted, 0 demoted)"  # was "1 steps"
    assert student_line({**summary, "train_steps": 3}).startswith("student: 3 steps, held-out loss 2.563;")
