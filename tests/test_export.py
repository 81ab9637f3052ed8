"""`sedi export` and `sedi export-model` on one real run (scripted teacher behind the real server, tiny student
trained by TRL): every format loads with `datasets` and trains an SFT step, the card says how the data was made,
a push reaches a local Hub over the Hub's own protocol with the token only in its header, and the student
loads with `AutoModelForCausalLM` as an adapter or merged.

The teacher here writes two instances per task, so the one-row-per-instance rule is visible (18 rows from 9
tasks in the run below)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sedi.export.formats import COLUMNS, FORMATS
from sedi.store.dataset import user_turn
from tests.helpers import SMALL_PRICED_ROUND, invoke, record_run, rows, scripted_args, sedi, set_args, status
from tests.hub_server import local_hub
from tests.scripted_teacher import ScriptedEngine
from tests.servers import serve_app

TOKEN = "hf_localTestToken0123456789"


class TwoInstances(ScriptedEngine):
    """The scripted teacher, writing two examples for every instance request (Self-Instruct's prompt style)."""

    def _answer(self, text: str, rng: random.Random) -> str:
        if text.endswith(("Example 1\nInput:", "Example 1\nOutput:")):
            first, second = ("Input", "Output") if text.endswith("Input:") else ("Output", "Input")
            a, b = rng.randrange(100), rng.randrange(100, 200)
            return f" case {a}\n{second}: answer {a}\n\nExample 2\n{first}: case {b}\n{second}: answer {b}\n\nTask: x"
        return super()._answer(text, rng)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """One finished round: 2 task calls, a classification and an instance call per task, a trained adapter."""
    from sedi.serve import create_app

    run = tmp_path_factory.mktemp("export") / "run"
    with serve_app(create_app(TwoInstances())) as served:
        extra = set_args(SMALL_PRICED_ROUND)
        result = sedi(*scripted_args(run, served, tiny_model_dir, *extra))
    assert result.returncode == 0, result.stderr
    return run


def _kept(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "data" / "kept.jsonl").read_text().splitlines()]


def _export(run: Path, fmt: str, out: Path, *extra: str) -> str:
    result = sedi("export", str(run), "--format", fmt, "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _as_messages(row: dict[str, Any]) -> dict[str, Any]:
    """What a user does before TRL takes alpaca or sharegpt rows (TRL reads neither directly)."""
    if "conversations" in row:
        role = {"human": "user", "gpt": "assistant"}
        return {"messages": [{"role": role[t["from"]], "content": t["value"]} for t in row["conversations"]]}
    user = user_turn(row["instruction"], row["input"])
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}


def _train_one_step(model_dir: Path, dataset: Any, out: Path) -> None:
    """TRL's SFTTrainer on the tiny model: one optimizer step on the dataset, which must change the weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    before = model.lm_head.weight.detach().clone()
    args = SFTConfig(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-2, use_cpu=True,
        bf16=False, activation_checkpointing=False, save_strategy="no", report_to="none", disable_tqdm=True,
        logging_steps=1, loss_type="nll",
    )  # fmt: skip
    trainer = SFTTrainer(model, args, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()
    assert trainer.state.global_step == 1
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))
    assert not torch.equal(before, model.lm_head.weight.detach())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_from_jsonl_and_parquet_and_trains_a_step(
    fmt: str, run_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset

    kept = _kept(run_dir)
    instances = [(task, inst) for task in kept for inst in task["instances"]]
    assert len(instances) > len(kept)  # several instances per task: several rows
    loaded = {}
    for suffix, builder in ((".jsonl", "json"), (".parquet", "parquet")):
        out = tmp_path / suffix[1:] / f"train{suffix}"
        printed = _export(run_dir, fmt, out)
        assert f"{len(instances)} rows ({len(kept)} tasks) -> {out}" in printed
        data = load_dataset(builder, data_files=str(out), split="train")
        assert data.column_names == COLUMNS[fmt] and len(data) == len(instances)
        loaded[suffix] = data.to_list()
        # The card's YAML points datasets at the file: the directory alone loads the same rows. (A fresh cache:
        # datasets 5.2 caches a local directory by its name and card, not its files, so a directory of the same
        # name from an earlier test would answer.)
        again = load_dataset(str(out.parent), split="train", cache_dir=str(tmp_path / "cache" / suffix[1:]))
        assert again.to_list() == loaded[suffix]
    assert loaded[".jsonl"] == loaded[".parquet"]
    first_task, first = instances[0]
    row = loaded[".jsonl"][0]
    if "id" in row:
        assert [r["id"] for r in loaded[".jsonl"]][:2] == [f"{first_task['id']}-0", f"{first_task['id']}-1"]
    turns = {
        "messages": lambda r: (r["messages"][0]["content"], r["messages"][1]["content"]),
        "prompt-completion": lambda r: (r["prompt"][0]["content"], r["completion"][0]["content"]),
        "alpaca": lambda r: (user_turn(r["instruction"], r["input"]), r["output"]),
        "sharegpt": lambda r: (r["conversations"][0]["value"], r["conversations"][1]["value"]),
    }[fmt](row)
    assert turns == (user_turn(first_task["instruction"], first["input"]), first["output"])
    data = load_dataset("parquet", data_files=str(tmp_path / "parquet" / "train.parquet"), split="train")
    if fmt in ("alpaca", "sharegpt"):
        data = data.map(_as_messages, remove_columns=data.column_names)
    _train_one_step(tiny_model_dir, data, tmp_path / "trainer")


def _card(path: Path) -> tuple[dict[str, Any], str]:
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(path)
    return card.data.to_dict(), card.text


@pytest.mark.slow
def test_the_dataset_card_says_how_the_data_was_made(run_dir: Path, tmp_path: Path) -> None:
    _export(run_dir, "prompt-completion", tmp_path / "out" / "data.jsonl")
    meta, text = _card(tmp_path / "out" / "README.md")
    numbers = status(run_dir)
    (digest,) = rows(run_dir, "SELECT digest FROM configs ORDER BY id DESC LIMIT 1")[0]
    from sedi.config.model import load_config

    assert meta["sedi"]["config_digest"] == digest == load_config(run_dir / "config.yaml").digest()
    assert f"| config digest | `{digest}` |" in text
    for key in ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "candidates", "kept", "keep_rate"):
        assert meta["sedi"][key] == numbers[key], key
    assert numbers["cost_usd"] > 0 and f"| cost | ${numbers['cost_usd']:.6f} |" in text
    assert meta["sedi"]["teacher"] == "openai/scripted-teacher" and "`openai/scripted-teacher` (completion" in text
    assert f"| teacher calls | {numbers['calls']} (" in text and f"keep rate {numbers['keep_rate']:.1%}" in text
    rejects = ", ".join(f"{rule} {n}" for rule, n in numbers["rejected_by_rule"].items())
    assert numbers["rejected_by_rule"] and f"| rejected, by rule | {rejects} |" in text
    assert "Self-Instruct seed tasks shipped with sedi" in text and meta["license"] == "apache-2.0"
    assert "| method | `self-instruct` |" in text
    assert '- `filter.heuristics`: `"self-instruct"`' in text and "- `feedback." not in text  # the method's own
    assert meta["sedi"]["rows"] == 18 and meta["sedi"]["tasks"] == 9 and "several rows" in text
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data.jsonl"}]}]
    assert (run_dir / "config.yaml").read_text().rstrip() in text  # the full config, as recorded


@pytest.mark.slow
def test_push_to_hub_sends_data_and_card_with_the_token_only_in_its_header(run_dir: Path, tmp_path: Path) -> None:
    out, hf_home = tmp_path / "out" / "train.parquet", tmp_path / "hf-home"
    with local_hub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_home)}
        pushed = sedi("export", str(run_dir), "--format", "messages", "--out", str(out), "--push-to-hub",
                      "me/instruct", "--private", env=env)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        again = sedi("export", str(run_dir), "--format", "messages", "--out", str(out), "--push-to-hub",
                     "me/instruct", "--force", env=env)  # fmt: skip
        assert again.returncode == 0, again.stderr  # the repo exists: the push commits again
        missing = sedi("export", str(run_dir), "--format", "messages", "--out", str(tmp_path / "no" / "a.jsonl"),
                       "--push-to-hub", "me/other", env={**env, "HF_TOKEN": ""})  # fmt: skip
    assert hub.repos == {"datasets/me/instruct": {"name": "instruct", "organization": "me", "visibility": "private",
                                                  "type": "dataset"}}  # fmt: skip
    assert hub.files["datasets/me/instruct"] == {"train.parquet": out.read_bytes(), "README.md": (
        out.parent / "README.md").read_bytes()}  # fmt: skip
    assert len(hub.commits) == 2 and "pushed -> " + hub.endpoint in pushed.stdout
    api = [auth for path, auth in hub.authorizations if "/datasets/me/" in path or path.startswith("/api/repos")]
    assert len(api) == 6 and set(api) == {f"Bearer {TOKEN}"}
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "HF_TOKEN is not set" in missing.stderr
    assert not (tmp_path / "no").exists()  # refused before anything was written
    # The token is written nowhere: not in the export, the run, the library's home, nor the output.
    for root in (out.parent, run_dir, hf_home):
        for path in root.rglob("*") if root.exists() else []:
            assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in pushed.stdout + pushed.stderr + again.stdout + again.stderr


@pytest.mark.slow
def test_bad_export_input_is_one_line_with_exit_code_2(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sedi.config.model import load_config

    empty = tmp_path / "empty"
    record_run(empty, load_config())  # started, nothing kept, nothing trained
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "README.md").write_text("# my project\n")

    def export(run: Path, fmt: str, out: Path) -> list[str]:
        return ["export", str(run), "--format", fmt, "--out", str(out)]

    model_out = ["--out", str(tmp_path / "m")]
    cases = {
        "--format 'csv'": export(run_dir, "csv", tmp_path / "a.jsonl"),
        "name a file ending in .jsonl": export(run_dir, "alpaca", tmp_path / "a.csv"),
        "no sedi run here": export(tmp_path, "alpaca", tmp_path / "x" / "a.jsonl"),
        "no kept tasks yet": export(empty, "alpaca", tmp_path / "y" / "a.jsonl"),
        "not written by sedi": export(run_dir, "alpaca", tmp_path / "theirs" / "a.json"),
        "licence of a seeds.path file": [*export(run_dir, "alpaca", tmp_path / "z" / "a.json"), "--license", "MIT"],
        "no round has a trained student": ["export-model", str(empty), *model_out],
        "--round 7: ": ["export-model", str(run_dir), "--round", "7", *model_out],
        "not an empty directory": ["export-model", str(run_dir), "--out", str(tmp_path / "theirs")],
        "--dataset 'not a repo'": ["export-model", str(run_dir), *model_out, "--dataset", "not a repo"],
    }  # fmt: skip
    for expected, args in cases.items():
        code, output = invoke(args, capsys, monkeypatch)
        assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, (args, output)
        assert expected in output, output
    assert "use one of 0" in invoke(cases["--round 7: "], capsys, monkeypatch)[1]
    assert (
        not (tmp_path / "m").exists()
        and not (tmp_path / "z").exists()
        and (tmp_path / "theirs" / "README.md").read_text() == "# my project\n"
    )


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a directory unwritable even for root, which ignores permission bits: the immutable attribute
    (``chattr +i``, ext4 and most Linux filesystems); as another user, ``chmod`` suffices. Undone on exit."""
    if os.geteuid() != 0:
        path.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("root, and this filesystem has no immutable attribute: no way to make a folder read-only")
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


@pytest.mark.slow
def test_writes_never_surprise_and_an_unwritable_place_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    existing, data = tmp_path / "mine.jsonl", run_dir / "data"
    existing.write_text("my own file\n")
    (tmp_path / "a-file").write_text("a regular file, so nothing can be made under it\n")
    under_a_file = tmp_path / "a-file" / "sub"
    before = {path.name: path.read_bytes() for path in data.iterdir()}

    def export(out: Path, *extra: str) -> list[str]:
        return ["export", str(run_dir), "--format", "alpaca", "--out", str(out), *extra]

    cases = {
        "mine.jsonl: already exists: pass --force": export(existing),
        "is inside the run's own data directory": export(data / "kept.jsonl", "--force"),
        "inside the run's own data directory": export(data / "other.jsonl"),
        "a-file/sub/a.jsonl: cannot write there (Not a directory)": export(under_a_file / "a.jsonl"),
        "a-file/sub/m: cannot write there (Not a directory)": ["export-model", str(run_dir), "--out", str(
            under_a_file / "m")],
        "a-file/sub: cannot write the report there (": ["report", str(run_dir), "--out", str(under_a_file)],
    }  # fmt: skip
    for expected, args in cases.items():
        code, output = invoke(args, capsys, monkeypatch)
        assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, (args, output)
        assert expected in output, output
    assert existing.read_text() == "my own file\n"
    assert {path.name: path.read_bytes() for path in data.iterdir()} == before  # the run's files as they were

    code, output = invoke(export(existing, "--force"), capsys, monkeypatch)
    assert code == 0 and json.loads(existing.read_text().splitlines()[0])["instruction"], output

    # A read-only run directory (a copy: `sedi report` writes into the run directory by default) and a read-only
    # export folder, made so with the immutable attribute when the tests run as root.
    copy, folder = tmp_path / "ro-run", tmp_path / "ro-out"
    shutil.copytree(run_dir, copy)
    folder.mkdir()
    with read_only(copy), read_only(folder):
        for args, where in (
            (["report", str(copy)], f"{copy}: cannot write the report there ("),
            (export(folder / "a.jsonl"), f"--out {folder / 'a.jsonl'}: cannot write there ("),
        ):
            code, output = invoke(args, capsys, monkeypatch)
            assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, (args, output)
            assert where in output, output
    assert not (copy / "report.html").exists() and not any(folder.iterdir())


def test_a_user_seed_file_is_named_with_the_licence_given_or_unknown() -> None:
    from sedi.export.card import seed_source

    mine = {"seeds": {"path": "seeds/mine.csv"}}
    assert seed_source(mine, None) == ("`seeds/mine.csv` (seeds.path)", "unknown (pass --license to record it)")
    assert seed_source(mine, "CC-BY-4.0") == ("`seeds/mine.csv` (seeds.path)", "CC-BY-4.0")
    assert seed_source({"seeds": {"path": None}}, None)[1] == "Apache-2.0"


def _generate(model: Any, tokenizer: Any, new: int = 5) -> Any:
    import torch

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Explain the water cycle."}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )  # fmt: skip
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
        tokens = model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    assert tokens.shape[1] == inputs["input_ids"].shape[1] + new
    return logits


@pytest.mark.slow
def test_the_student_loads_as_an_adapter_and_merged_and_its_card_links_the_data_card(
    run_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from feedback._hf import PLAIN_PROMPT
    from sedi.export.model import PLAIN_PROMPT as CARD_FRAME

    assert CARD_FRAME == PLAIN_PROMPT  # the card tells users the frame the student was trained in
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    shown = sedi("export-model", str(run_dir), "--out", str(adapter))
    assert shown.returncode == 0, shown.stderr
    assert "round 0 student (adapter, base " in shown.stdout and "adapter_model.safetensors" in shown.stdout
    shown = sedi("export-model", str(run_dir), "--merge", "--out", str(merged), "--dataset", "me/instruct")
    assert shown.returncode == 0, shown.stderr
    assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").is_file()

    with_adapter = AutoModelForCausalLM.from_pretrained(str(adapter))  # transformers loads it through peft
    assert with_adapter.peft_config
    plain = AutoModelForCausalLM.from_pretrained(str(merged))
    assert not getattr(plain, "peft_config", None)
    # The adapter is in force (the base alone answers otherwise), and merging folds it into the weights: the
    # same next-token logits as base + adapter.
    expected = _generate(with_adapter, AutoTokenizer.from_pretrained(str(adapter)))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert not torch.allclose(_generate(base, AutoTokenizer.from_pretrained(str(adapter))), expected, atol=1e-4)
    assert torch.allclose(_generate(plain, AutoTokenizer.from_pretrained(str(merged))), expected, atol=1e-4)

    (digest,) = rows(run_dir, "SELECT digest FROM configs ORDER BY id DESC LIMIT 1")[0]
    for out in (adapter, merged):
        card = ModelCard.load(out / "README.md")
        assert card.data.to_dict()["sedi"]["config_digest"] == digest
        assert "[DATASET_CARD.md](DATASET_CARD.md)" in card.text
        data_card = (out / "DATASET_CARD.md").read_text()
        assert f"| config digest | `{digest}` |" in data_card and "| teacher calls |" in data_card
    card = ModelCard.load(merged / "README.md")
    assert card.data.datasets == ["me/instruct"] and "(https://huggingface.co/datasets/me/instruct)" in card.text
    assert (
        card.data.library_name == "transformers" and ModelCard.load(adapter / "README.md").data.library_name == "peft"
    )
    # The card's own usage snippet runs as written (from the directory that holds the model).
    monkeypatch.chdir(tmp_path)
    snippet = re.search(r"```python\n(.*?)```", card.text, re.DOTALL)
    assert snippet is not None
    exec(snippet.group(1), {})  # our own card's code, under test
    assert yaml.safe_load((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
