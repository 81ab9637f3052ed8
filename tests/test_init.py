"""`sedi init` and seed files in CSV: the written config validates, documents every key of the models above the
key itself, holds the defaults plus what the teacher kind needs, passes the run's own checks and runs; CSV seeds
load as the same tasks as JSONL ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sedi.config.model import SediConfig, load_config
from sedi.config.seeds import Task, load_heldout_tasks, load_seed_tasks
from sedi.exceptions import ConfigError
from tests.helpers import invoke, rows, scripted_args, sedi, status
from tests.servers import Served

# What each kind must set beyond the defaults, written out here rather than read from sedi.cli.scaffold.
KINDS: dict[str, dict[str, Any]] = {
    "local": {},
    "openai": {  # base_url left unset: $OPENAI_BASE_URL, else OpenAI's
        "provider": "openai",
        "model": "gpt-4o-mini",
        "mode": "chat",
        "prices": {"prompt": 0.15, "completion": 0.6, "cached_prompt": None, "batch_api_discount": 0.5},
    },
    "vllm": {
        "provider": "openai",
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "mode": "chat",
    },
}
# A remote teacher's rounds: 5 calls per request slot (concurrency 4), and rounds enough for the larger of the
# budget's 200 calls and the target's 1000 tasks at one per call; the embedded demo keeps 2 rounds of 4 calls.
ROUNDS = {"generation": {"calls_per_round": 20}, "run": {"max_rounds": 50}}


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, also inside a list or an optional (``list[PromptShape] | None``)."""
    for candidate in getattr(annotation, "__args__", (annotation,)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        if getattr(candidate, "__args__", None) and (inner := _section(candidate)) is not None:
            return inner
    return None


def fields(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(key, description) of every field, depth first in declaration order, optional sections included."""
    out = []
    for name, info in model.model_fields.items():
        if info.exclude:  # not a config key (student.train.seed follows run.seed)
            continue
        out.append((name, info.description or ""))
        section = _section(info.annotation)
        if section is not None:
            out += fields(section)
    return out


def _words(text: str) -> str:
    return " ".join(text.replace("#", " ").split())


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def _init(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    code, output = invoke(["init", *args], capsys, monkeypatch)
    assert code == 0, output
    return output


@pytest.mark.parametrize("kind", list(KINDS))
def test_init_writes_every_key_with_its_help_text_and_default(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _init([str(tmp_path / "proj"), "--teacher", kind], capsys, monkeypatch)
    config, seeds = tmp_path / "proj" / "sedi.yaml", tmp_path / "proj" / "seeds.example.csv"
    assert f"wrote {config}" in out and f"wrote {seeds}" in out
    text = config.read_text()

    code, shown = invoke(["config", "show", str(config)], capsys, monkeypatch)
    assert code == 0, shown
    expected = SediConfig().model_dump(mode="json")
    expected["teacher"].update(KINDS[kind])
    expected["seeds"]["path"] = str(seeds)
    for section, values in ({} if kind == "local" else ROUNDS).items():
        expected[section].update(values)
    assert yaml.safe_load(shown) == expected  # the defaults, plus what the kind needs: nothing else differs
    assert load_config(config).model_dump(mode="json") == expected

    written = _flat(yaml.safe_load(text))
    assert set(written) == set(_flat(expected))  # every key is in the file, none left implicit

    # Every field's help text is the comment right above its key (an unset optional section: above its keys,
    # commented out), in the models' order.
    words, cursor = _words(text), 0
    for name, description in fields(SediConfig):
        found = words.find(_words(description), cursor)
        assert found >= 0, f"the help text of {name!r} is missing or out of order: {description!r}"
        cursor = found + len(_words(description))
        assert words[cursor:].startswith(f" {name}:"), f"{name!r} does not follow its help text"
    assert all(line == "" or line.lstrip().startswith("#") or ":" in line for line in text.splitlines())


def test_each_kind_passes_the_run_checks_it_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sedi.loop import check_inputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for kind in KINDS:
        _init([kind, "--teacher", kind], capsys, monkeypatch)
        config = load_config(Path(kind) / "sedi.yaml")
        assert config.seeds.path == f"{kind}/seeds.example.csv"  # relative, as given: read from the working dir
        if kind == "openai":  # a paid API: the key is required, and the prices the note says are required
            with pytest.raises(ConfigError, match=r"teacher.api_key_env"):
                check_inputs(config, "sedi.yaml")
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            with pytest.raises(ConfigError, match=r"teacher.prices"):
                check_inputs(load_config(Path(kind) / "sedi.yaml", ["teacher.prices=null"]), "sedi.yaml")
        (seeds, heldout), _ = check_inputs(config, "sedi.yaml")  # the vllm kind needs no key at loopback
        assert [t.id for t in seeds] == ["human-0", "human-1", "human-2"] and len(heldout) == 252
        assert seeds[0].output.count("\n") == 2 and "," in seeds[1].input  # quoted fields came back whole


def test_init_refuses_to_overwrite_without_force_and_never_overwrites_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _init([], capsys, monkeypatch)  # the current directory by default
    config, seeds = tmp_path / "sedi.yaml", tmp_path / "seeds.example.csv"
    assert load_config(config).seeds.path == "seeds.example.csv"
    config.write_text("method: self-instruct\n")
    seeds.write_text("instruction\nMy own task.\n")

    code, output = invoke(["init", "--teacher", "openai"], capsys, monkeypatch)
    assert code == 2
    assert output.strip() == "error: sedi.yaml: already exists: pass --force to overwrite it, or init another directory"
    assert config.read_text() == "method: self-instruct\n"

    out = _init(["--teacher", "openai", "--force"], capsys, monkeypatch)
    assert load_config(config).teacher.provider == "openai"
    assert seeds.read_text() == "instruction\nMy own task.\n" and "kept seeds.example.csv" in out

    code, output = invoke(["init", "other", "--teacher", "gpt"], capsys, monkeypatch)
    assert (code, output.strip()) == (2, "error: --teacher 'gpt': use one of local, openai, vllm")
    assert not (tmp_path / "other").exists()


def test_openai_leaves_the_url_to_the_environment_unless_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sedi.loop import check_inputs, resolved

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _init(["plain", "--teacher", "openai"], capsys, monkeypatch)
    config = load_config(Path("plain") / "sedi.yaml")
    assert config.teacher.base_url is None
    # $OPENAI_BASE_URL is what the run uses (here a loopback server, which needs no key) and what it records.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8123/v1")
    (_, _), remote = check_inputs(config, "sedi.yaml")
    assert remote is not None and remote[0].base_url == "http://127.0.0.1:8123/v1"
    assert resolved(config, remote).teacher.base_url == "http://127.0.0.1:8123/v1"

    _init(["given", "--teacher", "vllm", "--base-url", "http://10.1.2.3:8000/v1"], capsys, monkeypatch)
    assert load_config(Path("given") / "sedi.yaml").teacher.base_url == "http://10.1.2.3:8000/v1"
    code, output = invoke(["init", "local", "--base-url", "http://10.1.2.3:8000/v1"], capsys, monkeypatch)
    assert code == 2 and output.startswith("error: --base-url: the local teacher") and output.count("\n") == 1
    assert not Path("local").exists()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_remote_run_ends_at_its_target_or_budget_and_the_demo_at_its_rounds(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sedi.cli.estimate import Seen, forecast

    _init([str(tmp_path), "--teacher", kind], capsys, monkeypatch)
    config = load_config(tmp_path / "sedi.yaml")
    gen, most = config.generation, config.run.max_rounds * config.generation.calls_per_round
    # A run seen to keep 2 tasks per call: 500 calls to the target.
    seen = Seen(calls=20, slots=20, kept=40, candidates=80, prompt_tokens=20_000, completion_tokens=8_000)
    est = forecast(config, seen, load_seed_tasks(None), "run")
    if kind == "local":
        assert (gen.calls_per_round, config.run.max_rounds) == (4, 2)
        assert est["ends_by"] == "run.max_rounds" and est["calls"] == 20  # 8 planned calls, 20 already made
    else:
        assert gen.calls_per_round == 5 * config.teacher.concurrency
        assert most >= max(config.budget.max_calls or 0, gen.target_kept)  # rounds never end it first
        assert est["ends_by"] == "budget.max_calls" and est["calls"] == config.budget.max_calls
    assert est["calls_to_target"] > est["calls"]  # the target's own forecast, beside the headline


def _task_rows(n: int) -> str:
    return "instruction,input,output\n" + "".join(f"Task number {i} asks for this.,,Answer {i}\n" for i in range(n))


def test_your_seeds_are_split_into_seeds_and_a_held_out_set_never_used_as_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sedi.loop import check_inputs

    monkeypatch.chdir(tmp_path)
    Path("mine.csv").write_text(_task_rows(60))
    out = _init(["proj", "--seeds", "mine.csv"], capsys, monkeypatch)
    assert "wrote proj/seeds.jsonl (54 of your tasks)" in out and "wrote proj/heldout.jsonl (6 held out)" in out
    config = load_config(Path("proj") / "sedi.yaml")
    assert (config.seeds.path, config.seeds.heldout_path) == ("proj/seeds.jsonl", "proj/heldout.jsonl")
    (seeds, heldout), _ = check_inputs(config, "sedi.yaml")
    mine = load_seed_tasks("mine.csv")
    assert len(heldout) == 6 and len(seeds) == 54 and not Path("proj/seeds.example.csv").exists()
    assert not {t.instruction for t in seeds} & {t.instruction for t in heldout}
    assert sorted(t.instruction for t in [*seeds, *heldout]) == sorted(t.instruction for t in mine)
    assert [t.id for t in seeds] == [t.id for t in mine if t.instruction in {s.instruction for s in seeds}]

    # A seed file is never overwritten, --force or not; a file too small to split is used as it is.
    code, output = invoke(["init", "proj", "--seeds", "mine.csv", "--force"], capsys, monkeypatch)
    assert code == 2 and "proj/seeds.jsonl: already exists" in output and output.count("\n") == 1
    Path("few.csv").write_text(_task_rows(24))
    out = _init(["small", "--seeds", "few.csv"], capsys, monkeypatch)
    assert "24 tasks: fewer than 25, so none is held out" in out
    small = load_config(Path("small") / "sedi.yaml")
    assert (small.seeds.path, small.seeds.heldout_path) == ("few.csv", None)
    Path("mine.txt").write_text(_task_rows(30))
    code, output = invoke(["init", "txt", "--seeds", "mine.txt"], capsys, monkeypatch)
    assert code == 2 and "mine.txt: unknown extension '.txt' (--seeds)" in output and not Path("txt").exists()


def test_the_readme_shows_what_init_writes() -> None:
    from sedi.cli.scaffold import render_config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Start from your own seed tasks", 1)[1]
    shown = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert len(shown.splitlines()) >= 15 and render_config("openai").startswith(shown)


@pytest.mark.slow
def test_the_start_runs_as_written(tmp_path: Path, scripted: Served, tiny_model_dir: Path) -> None:
    assert sedi("init", str(tmp_path / "proj")).returncode == 0
    run_dir = tmp_path / "run"
    args = scripted_args(run_dir, scripted, tiny_model_dir, str(tmp_path / "proj" / "sedi.yaml"))
    result = sedi(*args, "--set", "run.max_rounds=1", "--set", "student.heldout_size=4")
    assert result.returncode == 0, result.stderr
    summary = status(run_dir)
    assert summary["state"] == "finished" and summary["calls"] == 4 and summary["kept"] > 0
    human = rows(run_dir, "SELECT task_id, instruction FROM seed_pool WHERE origin = 'human' ORDER BY task_id")
    assert [r[0] for r in human] == ["human-0", "human-1", "human-2"]
    assert human[2][1] == "Rewrite the sentence in the passive voice."


def test_csv_seeds_load_as_the_same_tasks_as_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "seeds.csv"
    # A spreadsheet's export: byte-order mark, CRLF, header in capitals, an extra column, blank lines, a quoted
    # comma, quote and line break, an empty input, columns in another order, one id given.
    csv_path.write_bytes(
        "\ufeffOutput,Instruction,Notes,Input,id\r\n"
        '"Paris, France",Name the capital.,geo,France,\r\n'
        "\r\n"
        '"He said ""hi""\r\nand left.",Report the speech.,,  ,speech\r\n'
        ",Say nothing.,,,\r\n".encode()
    )
    expected = [
        Task("human-0", "Name the capital.", "France", "Paris, France"),
        Task("speech", "Report the speech.", "", 'He said "hi"\nand left.'),
        Task("human-2", "Say nothing.", "", ""),
    ]
    assert load_seed_tasks(str(csv_path)) == expected
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text(
        '{"instruction": "Name the capital.", "input": "France", "output": "Paris, France"}\n'
        '{"id": "speech", "instruction": "Report the speech.", "output": "He said \\"hi\\"\\nand left."}\n'
        '{"instruction": "Say nothing.", "output": ""}\n'
    )
    assert load_seed_tasks(str(jsonl)) == expected  # ids are made the same way in both formats

    heldout = load_heldout_tasks(str(csv_path))
    assert [(t.id, t.origin) for t in heldout] == [
        ("heldout-0", "heldout"),
        ("speech", "heldout"),
        ("heldout-2", "heldout"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Instruction,output\nx,y\nz,w\nv,u\n,t\n", r"s.csv: line 5: column 'instruction' is empty"),
        ('instruction,output\n"two\nlines",y\n,t\n', r"s.csv: line 4: column 'instruction' is empty"),
        ("\n\ninput,output\nx,y\n", r"s.csv: line 3: no column 'instruction' \(header: input, output\)"),
        ("instruction,input\nx,y\n", r"s.csv: line 1: no column 'output' \(header: instruction, input\)"),
        ("instruction,ouptut\nx,y\n", r"s.csv: line 1: unknown column 'ouptut': rename it 'output'"),
        ("instruction,input,instruction\nx,y,z\n", r"s.csv: line 1: column 'instruction' appears twice"),
        ("instruction,output\nSay hi, politely,Hi\n", r"s.csv: line 2: 3 values but the header names 2 columns"),
        ('instruction,output\nx,y\n"Say hi,Hi\nz,w\n', r"s.csv: line 3: malformed CSV \(unexpected end of data\)"),
        ("id,instruction,output\na,x,1\na,y,2\n", r"s.csv: line 3: duplicate id 'a'"),
        ("instruction,output\n", r"s.csv: no tasks in the file \(seeds.path\)"),
    ],
)
def test_a_csv_mistake_names_the_file_the_line_and_the_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_seed_tasks(str(path))
    assert "\n" not in str(err.value) and re.search(r"(give|rename|keep|put|add|the first line)", str(err.value))


def _count(model: type[BaseModel]) -> tuple[int, int]:
    """(keys with a value, sections) of a config model, nested sections included."""
    keys = sections = 0
    for info in model.model_fields.values():
        if info.exclude:
            continue
        section = _section(info.annotation)
        if section is None:
            keys += 1
        else:
            inner = _count(section)
            keys, sections = keys + inner[0], sections + 1 + inner[1]
    return keys, sections


def test_the_config_reference_states_how_many_keys_there_are() -> None:
    keys, sections = _count(SediConfig)
    doc = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text(encoding="utf-8")
    assert f"{keys} keys in {sections} sections" in doc, f"docs/config.md: say {keys} keys in {sections} sections"
