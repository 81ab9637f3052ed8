"""The contract for user mistakes, one table: every mistake below, driven through the CLI, gives exactly one
line of error output naming the file or the key, exit code 2, no request to the teacher, and not one byte
changed in the run directory of the run it was meant to resume (what was paid for stays as it was).

Every case runs against a directory holding an earlier run (recorded config, state, data), because that is
where a mistake costs most; the teacher is a counting loopback server that would answer every request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sedi.config.model import load_config
from sedi.stages.checks import has_chat_template
from tests.helpers import invoke, record_run, snapshot
from tests.servers import Served, serve_app

MISSING_KEY_ENV = "SEDI_TEST_MISSING_KEY_7c1d"


async def _teapot(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A teacher that answers anything with an error; the cases must never reach it at all."""
    await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"not expected"})


@pytest.fixture(scope="module")
def teacher() -> Iterator[Served]:
    with serve_app(_teapot) as served:
        yield served


def fake_model(path: Path, *, template: bool | None = None, files: tuple[str, ...] = ("config.json",)) -> Path:
    """A model directory as far as the file checks can tell (no weights: nothing may load it)."""
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("{}")
    if template is not None:
        extra = ', "chat_template": "{{ messages }}"' if template else ""
        (path / "tokenizer_config.json").write_text('{"model_max_length": 64' + extra + "}")
    return path


@dataclass
class Mistake:
    name: str
    expected: str  # the key or file the error line must name
    sets: list[str] = field(default_factory=list)
    prepare: Callable[[Path], list[str]] = lambda _: []  # writes files; returns more CLI args
    recorded: list[str] = field(default_factory=list)  # --set items of the earlier run, beyond the base ones
    env: dict[str, str] = field(default_factory=dict)


def _file(name: str, text: str | bytes) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return write


def _seeds(text: str, name: str = "seeds.jsonl") -> Callable[[Path], list[str]]:
    return lambda tmp: ["--set", f"seeds.path={_file(name, text)(tmp)}"]


def _config_file(text: str) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(_file("c.yaml", text)(tmp))]


_SEED = '{"instruction": "Say hi.", "output": "Hi"}\n'  # 9 characters, as the size check counts them


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


def _cls_pooled(path: Path) -> Path:
    """A sentence-transformers folder (as far as its files tell) that pools by the CLS token."""
    fake_model(path, files=("config.json",))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    flags = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    return path


def _set(key: str, make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: ["--set", f"{key}={make(tmp)}"]


def _broken_db(damage: Callable[[Path], object]) -> Callable[[Path], list[str]]:
    def prepare(tmp: Path) -> list[str]:
        damage(tmp / "run" / "sedi.db")
        return []

    return prepare


def _truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


MISTAKES = [
    Mistake("unknown key", "teacher.modle", sets=["teacher.modle=x"]),
    Mistake("bad value", "budget.max_calls", sets=["budget.max_calls=-1"]),
    Mistake("bad enum value", "teacher.mode", sets=["teacher.mode=chatty"]),
    Mistake("bad repair mode", "generation.repair", sets=["generation.repair=always"]),
    Mistake("repair_per_call out of range", "generation.repair_per_call", sets=["generation.repair_per_call=0"]),
    Mistake("malformed YAML", "c.yaml", prepare=_config_file("teacher: [unclosed\n")),
    Mistake("config file missing", "nope.yaml", prepare=lambda tmp: [str(tmp / "nope.yaml")]),
    Mistake("seed file not JSONL", "seeds.jsonl: line 1: invalid JSON", prepare=_seeds("Say hello. -> Hello.\n")),
    Mistake("seed without instruction", "field 'instruction' is missing", prepare=_seeds('{"output": "x"}\n')),
    Mistake("empty seed file", "seeds.jsonl: no tasks", prepare=_seeds("")),
    Mistake("seed file missing", "seeds.path", prepare=lambda tmp: ["--set", f"seeds.path={tmp / 'none.jsonl'}"]),
    Mistake(
        "CSV seeds without an instruction column",
        "seeds.csv: line 1: no column 'instruction'",
        prepare=_seeds("input,output\nx,y\n", "seeds.csv"),
    ),
    Mistake(
        "CSV seed with an empty instruction",
        "seeds.csv: line 3: column 'instruction' is empty",
        prepare=_seeds("instruction,output\nSay hi.,Hi\n ,Bye\n", "seeds.csv"),
    ),
    Mistake(
        "CSV seed with an unquoted comma",
        "seeds.csv: line 2: 3 values but the header names 2 columns",
        prepare=_seeds("instruction,output\nSay hi, politely.,Hi\n", "seeds.csv"),
    ),
    Mistake(
        "held-out CSV with a misspelt column",
        "heldout.csv: line 1: unknown column 'instuction'",
        prepare=_set("seeds.heldout_path", _file("heldout.csv", "instuction,output\nx,y\n")),
    ),
    # Inputs bounded and checked before spending (issue 26): sizes, duplicates, control characters, extensions.
    Mistake(
        "duplicate key in the YAML config",
        "c.yaml: duplicate key 'method' at lines 1 and 3",
        prepare=_config_file("method: sedi\nbudget: {max_calls: 3}\nmethod: self-instruct\n"),
    ),
    Mistake(
        "duplicate nested key in the YAML config",
        "c.yaml: duplicate key 'max_calls' at lines 2 and 3",
        prepare=_config_file("budget:\n  max_calls: 3\n  max_calls: 30\n"),
    ),
    Mistake("config path is a directory", "confdir: is a directory", prepare=lambda tmp: [str(_dir(tmp / "confdir"))]),
    Mistake(
        "JSONL seed over seeds.max_chars",
        "seeds.jsonl: line 2: the task is 20,015 characters (instruction + input + output), over seeds.max_chars",
        prepare=_seeds(_SEED + json.dumps({"instruction": "Summarise it.", "input": "x" * 20_000, "output": "ok"})),
    ),
    Mistake(
        "CSV seed past the csv module's own field limit",
        "seeds.csv: line 3: the task is 200,015 characters",
        prepare=_seeds(f'instruction,input,output\nSay hi.,,Hi\nSummarise it.,"{"y" * 200_000}",ok\n', "seeds.csv"),
    ),
    Mistake(
        "seed under a lowered seeds.max_chars",
        "seeds.jsonl: line 1: the task is 9 characters (instruction + input + output), over seeds.max_chars (8)",
        sets=["seeds.max_chars=8"],
        prepare=_seeds(_SEED),
    ),
    Mistake(
        "identical seed rows", "seeds.jsonl: line 3: the same task as line 1", prepare=_seeds(_SEED + "\n" + _SEED)
    ),
    Mistake(
        "NUL in a JSONL seed",
        "seeds.jsonl: line 1: field 'output' holds the control character U+0000",
        prepare=_seeds('{"instruction": "Say hello.", "output": "Hel\\u0000lo"}\n'),
    ),
    Mistake(
        "NUL byte in a CSV seed",
        "seeds.csv: line 2: field 'instruction' holds the control character U+0000",
        prepare=_seeds("instruction,output\nSay\x00 hi.,Hi\n", "seeds.csv"),
    ),
    Mistake("seed file named .txt", "seeds.txt: unknown extension '.txt'", prepare=_seeds(_SEED, "seeds.txt")),
    Mistake(
        "held-out file over seeds.max_chars",
        "heldout.jsonl: line 1: the task is",
        prepare=_set(
            "seeds.heldout_path", _file("heldout.jsonl", json.dumps({"instruction": "x" * 30_000, "output": ""}) + "\n")
        ),
    ),
    Mistake("student model missing", "student.model", sets=["student.model=/nonexistent/student"]),
    Mistake(
        "student model without config.json",
        "student.model",
        prepare=_set("student.model", lambda tmp: fake_model(tmp / "m", files=("README.md",))),
    ),
    Mistake("embedding model missing", "filter.embedding_model", sets=["filter.embedding_model=/nonexistent/minilm"]),
    Mistake(
        "embedding dir without modules.json or config.json",
        "filter.embedding_model",
        prepare=_set("filter.embedding_model", lambda tmp: fake_model(tmp / "e", files=("README.md",))),
    ),
    Mistake(
        "openvino asked for an embedding model it cannot convert",
        "field 'filter.embedding_backend' is 'openvino' but filter.embedding_model cannot run on it (it pools by "
        "'pooling_mode_cls_token', not by the mean)",
        sets=["filter.embedding_backend=openvino"],
        prepare=_set("filter.embedding_model", lambda tmp: _cls_pooled(tmp / "cls")),
    ),
    Mistake(
        "local teacher model missing",
        "teacher.local.model",
        sets=["teacher.provider=local", "teacher.local.model=/nonexistent/teacher"],
    ),
    Mistake(
        "missing API key",
        f"${MISSING_KEY_ENV}",
        sets=["teacher.base_url=https://api.example.invalid/v1", f"teacher.api_key_env={MISSING_KEY_ENV}"],
    ),
    Mistake(
        "chat on a student without a chat template",
        "student.train.chat",
        sets=["student.train.chat=true"],
        prepare=_set("student.model", lambda tmp: fake_model(tmp / "base", template=False)),
    ),
    Mistake("chat on the bundled base student", "student.train.chat", sets=["student.train.chat=true"]),
    Mistake(
        "changed plan setting on resume",
        "generation.calls_per_round (4 -> 2)",
        sets=["generation.calls_per_round=2"],
        recorded=["generation.calls_per_round=4"],
    ),
    Mistake("changed seed on resume", "run.seed (0 -> 1)", sets=["run.seed=1"]),
    Mistake("changed teacher model on resume", "teacher.model", sets=["teacher.model=another"]),
    Mistake(
        "another teacher server on resume",
        "teacher.base_url",
        sets=["teacher.base_url=http://127.0.0.1:9/v1"],  # the port of 'discard': not the recorded server
    ),
    Mistake(
        "another local teacher model on resume",
        "teacher.local.model",
        sets=["teacher.provider=local"],
        prepare=_set("teacher.local.model", lambda tmp: fake_model(tmp / "teacher-b")),
        recorded=["teacher.provider=local", "teacher.local.model=gemma-3-270m"],
    ),
    Mistake("corrupt sedi.db", "sedi.db", prepare=_broken_db(lambda db: db.write_bytes(b"\x00garbage" * 600))),
    Mistake("truncated sedi.db", "sedi.db", prepare=_broken_db(_truncate)),
    Mistake(
        "zero-length sedi.db beside run files", "sedi.db: is empty", prepare=_broken_db(lambda db: db.write_bytes(b""))
    ),
    # generation.shaping (request shapes, tests/test_shaping.py)
    Mistake("bad shaping value", "generation.shaping", sets=["generation.shaping=learned"]),
    Mistake("shape floors over 1", "floor 0.4 times 4 shapes is over 1", sets=["generation.shapes.floor=0.4"]),
    Mistake("shape listed twice", "twice", sets=["generation.shapes.options=[{in_context: 2}, {in_context: 2}]"]),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_mistake_is_one_line_exit_2_no_request_and_no_change(
    mistake: Mistake,
    tmp_path: Path,
    teacher: Served,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["teacher.provider=openai", f"teacher.base_url={teacher.base_url}", "teacher.model=tiny"]
    monkeypatch.delenv(MISSING_KEY_ENV, raising=False)
    run_dir = tmp_path / "run"
    record_run(run_dir, load_config(None, [*base, *mistake.recorded]))
    extra = mistake.prepare(tmp_path)
    before, requests = snapshot(run_dir), teacher.counter.total
    args = ["run", *extra, "--run-dir", str(run_dir)]
    for item in [*base, *mistake.sets]:
        args += ["--set", item]
    code, output = invoke(args, capsys, monkeypatch)
    lines = output.strip().splitlines()
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert mistake.expected in lines[0], lines[0]
    assert teacher.counter.total == requests  # counted at the server: nothing was sent
    assert snapshot(run_dir) == before  # nothing paid for was lost or changed


def test_the_changed_setting_message_is_exactly_the_documented_one(
    tmp_path: Path, teacher: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["teacher.provider=openai", f"teacher.base_url={teacher.base_url}", "generation.calls_per_round=4"]
    run_dir = tmp_path / "run"
    record_run(run_dir, load_config(None, base))
    args = ["run", "--run-dir", str(run_dir)]
    for item in [*base, "generation.calls_per_round=2"]:
        args += ["--set", item]
    code, output = invoke(args, capsys, monkeypatch)
    assert code == 2
    assert output.strip() == (
        f"error: {run_dir}: cannot resume with changed setting(s) generation.calls_per_round (4 -> 2): they change "
        "the plan of rounds already started; restore them or use a new --run-dir"
    )


def test_a_budget_stop_exits_3_and_your_seeds_say_which_held_out_set_they_are_measured_on(
    tmp_path: Path,
    teacher: Served,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented budget code, distinct from errors (2) and bugs (1); nothing sent (the cap is 0)."""
    from sedi.report.summary import read_summary

    seeds, run_dir, requests = _file("mine.jsonl", _SEED)(tmp_path), tmp_path / "run", teacher.counter.total
    sets = ["teacher.provider=openai", f"teacher.base_url={teacher.base_url}", "teacher.model=tiny"]
    sets += ["budget.max_calls=0", f"seeds.path={seeds}", f"student.model={tiny_model_dir}", "student.heldout_size=2"]
    code, output = invoke(
        ["run", "--run-dir", str(run_dir), *(a for s in sets for a in ("--set", s))], capsys, monkeypatch
    )
    assert code == 3 and "budget exhausted: budget.max_calls is 0" in output and "Traceback" not in output, output
    assert read_summary(run_dir)["state"] == "budget_exhausted" and teacher.counter.total == requests
    (line,) = [line for line in output.splitlines() if line.startswith("held-out:")]
    assert line.startswith("held-out: the first 2 of the 252 general tasks shipped with sedi, not yours"), line


def test_the_template_check_agrees_with_transformers(tiny_model_dir: Path, tiny_model_dir_no_template: Path) -> None:
    from transformers import AutoTokenizer

    for path in (tiny_model_dir, tiny_model_dir_no_template):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        assert has_chat_template(path) == (tokenizer.chat_template is not None), path
    assert has_chat_template(tiny_model_dir) and not has_chat_template(tiny_model_dir_no_template)


@pytest.mark.parametrize(
    "sets",
    [
        ["budget.max_calls=500", "budget.max_tokens=100000"],
        ["teacher.concurrency=16", "teacher.timeout_s=10", "teacher.max_retries=1", "teacher.backoff_base_s=2"],
        ["run.max_rounds=9", "generation.target_kept=5"],
        ["student.heldout_size=0", "student.heldout_generate=0"],
        ["teacher.local.model=/another/teacher"],  # ignored by provider openai
        ["teacher.base_url={url_variant}"],  # the same server, written differently
    ],
)
def test_settings_that_do_not_change_the_plan_may_change_on_resume(
    sets: list[str], tmp_path: Path, teacher: Served
) -> None:
    from sedi.loop import check_inputs

    base = ["teacher.provider=openai", f"teacher.base_url={teacher.base_url}"]
    run_dir = tmp_path / "run"
    record_run(run_dir, load_config(None, base))
    variant = teacher.base_url.replace("http://", "HTTP://") + "/"
    check_inputs(load_config(None, [*base, *(s.format(url_variant=variant) for s in sets)]), "c.yaml", run_dir)


def test_a_setting_not_on_the_allowlist_is_refused(tmp_path: Path, teacher: Served) -> None:
    from sedi.exceptions import RunDirError
    from sedi.loop import check_inputs

    base = ["teacher.provider=openai", f"teacher.base_url={teacher.base_url}"]
    run_dir = tmp_path / "run"
    record_run(run_dir, load_config(None, base))
    changed = load_config(None, [*base, "instances.max_tokens=7", "filter.rouge_threshold=0.5"])
    with pytest.raises(RunDirError, match=r"filter.rouge_threshold \(null -> 0.5\), instances.max_tokens \(300 -> 7\)"):
        check_inputs(changed, "c.yaml", run_dir)
