"""The filter replay benchmark and its recorder. The replay judges a synthetic stream with planted near-duplicates
(ROUGE-L 0.8 and cosine 0.81-0.90 with an earlier task: rejected by Self-Instruct's 0.7, kept by SeDi's 0.85 and
0.95) through the run's own TaskFilter; the recorder, behind the real server with the scripted teacher, resumes a
killed recording without asking again for what it holds."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import serve_app

pytestmark = pytest.mark.slow  # every test here runs a script in a Python process

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# Word salad from one vocabulary: two random 10-word instructions share almost no ordered words (ROUGE-L ~0.1),
# so only the planted pairs are near each other. None of these words is a heuristic keyword.
_VOCABULARY = (
    "apple river candle garden pocket ladder violin meadow harbor tunnel saddle copper lantern orchard pebble walnut "
    "glacier compass feather kettle quilt basket mirror anchor blanket thimble canyon marble oyster parrot pepper "
    "ribbon sandal tulip velvet whistle yogurt zebra bamboo cactus dolphin emerald falcon ginger hammock igloo "
    "jasmine koala lemon mango nectar olive panda quartz raven salmon tiger umbrella vanilla walrus yarn acorn "
    "beetle cobalt daisy engine fossil goblet hazel iris jacket kiwi lobster maple nutmeg otter peanut quiver rocket "
    "spruce turnip unicorn violet wagon badger cedar donkey elbow fennel gravel honey ivory"
)
WORDS = _VOCABULARY.split()
SEED_COPY = (  # seed_task_0, verbatim
    "Is there anything I can eat for a breakfast that doesn't include eggs, yet includes protein, and has roughly "
    "700-1000 calories?"
)


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / f"{name}.py"), *args], capture_output=True, text=True, env=env, timeout=600
    )


def block(instruction: str, output: str = "A fine answer.") -> str:
    return f"{instruction}\nInput: <noinput>\nOutput: {output}\n"


def response(instructions: list[str], finish: str = "stop", last_output: str = "A fine answer.") -> str:
    """An alpaca-style continuation of a 6-task completion prompt (it starts inside Task 7's instruction)."""
    return continuation([block(i) for i in instructions[:-1]] + [block(instructions[-1], last_output)])


def continuation(blocks: list[str]) -> str:
    """Task blocks as the teacher continues a completion prompt that ends inside Task 7's instruction."""
    return " " + blocks[0] + "".join(f"\nTask {8 + n}\nInstruction: {b}" for n, b in enumerate(blocks[1:]))


def synthetic_stream(path: Path, second: Path | None = None) -> dict[str, str]:
    """36 responses of 3 tasks; every third response plants a near-duplicate of a fresh task up to 10 responses
    earlier. With ``second``, responses 24-35 go there as a stream of another seed. Returns the planted
    near-duplicates, each with the task it copies."""
    rng = random.Random(7)
    fresh: list[str] = []
    planted: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    for index in range(36):
        tasks = [f"Describe {' '.join(rng.sample(WORDS, 9))}" for _ in range(3)]
        fresh += tasks
        finish, last_output = "stop", "A fine answer."
        if index % 3 == 2:
            original = fresh[len(fresh) - (6 if len(fresh) < 30 else 30)]  # a first task: each copied once
            words = original.split()
            words[3], words[7] = rng.choice(WORDS), rng.choice(WORDS)  # 8 of 10 words kept in order: ROUGE-L 0.8
            planted[" ".join(words)] = original
            tasks[1] = " ".join(words)
        if index == 5:
            tasks[2] = tasks[0]  # the teacher repeats itself within one response: rejected by both
        if index == 10:
            tasks[2] = SEED_COPY  # a verbatim seed: rejected by both
        if index == 20:
            last_output = ""  # a task without an output: a format rule, before similarity
        if index == 30:
            finish = "length"  # the last item was cut off: dropped before similarity
        text = response(tasks, finish, last_output)
        records.append(
            {"index": index, "stream_seed": 0, "request_seed": index, "in_context": [], "text": text}
            | {"finish_reason": finish, "prompt_tokens": 400, "completion_tokens": len(text.split())}
        )
    files = [(path, records)] if second is None else [(path, records[:24]), (second, records[24:])]
    for stream_seed, (file, part) in enumerate(files):
        with gzip.open(file, "wt", encoding="utf-8") as handle:
            for record in reversed(part):  # recorded out of order, as concurrent requests finish
                handle.write(json.dumps({**record, "stream_seed": stream_seed}) + "\n")
    return planted


def test_replay_keeps_more_with_the_relaxed_filter_and_reports_every_field(tmp_path: Path) -> None:
    """Two streams: the second one's near-duplicates of tasks in the first are rejected by the baseline only if
    the second is judged against the first one's kept pool."""
    first, second, verdicts = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz", tmp_path / "verdicts.jsonl"
    planted = synthetic_stream(first, second)
    args = ["--streams", f"{first},{second}", "--bucket", "25", "--min-candidates", "5", "--bootstrap", "200"]
    args += ["--verdicts", str(verdicts), "--embedding-cache", str(tmp_path / "embeddings.sqlite")]
    done = script("bench_filter_replay", *args)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["responses"] == 36 and result["items"] == 108
    assert result["reached_similarity"] == 106  # the cut-off item and the one without output never reach it
    assert result["rules_self_instruct"]["missing_output"] == result["rules_self_instruct"]["truncated"] == 1
    sizes, baseline, relaxed = result["pool_sizes"], result["keep_rate_self_instruct"], result["keep_rate_sedi"]
    assert sizes[0] == 175 // 25 * 25 and len(baseline) == len(relaxed) == len(sizes) >= 3
    assert len(result["keep_rate_self_instruct_ci95"]) == len(result["keep_rate_sedi_ci95"]) == len(sizes)
    compared = [(a, b) for a, b in zip(baseline, relaxed, strict=True) if a is not None and b is not None]
    assert len(compared) >= 2 and all(b >= a for a, b in compared)
    for rate, interval in zip(relaxed, result["keep_rate_sedi_ci95"], strict=True):
        assert (rate is None) == (interval is None) and (rate is None or interval[0] <= rate <= interval[1])
    # 12 planted near-duplicates, the repeat and the seed copy are what the baseline rejects; SeDi only the last two
    assert result["rules_self_instruct"]["rouge"] == 14 and result["rules_sedi"]["rouge"] == 2
    assert result["rouge_within_response_self_instruct"] == result["rouge_within_response_sedi"] == 1
    assert result["pool_end_sedi"] == result["pool_end_self_instruct"] + 12 == 104
    assert result["keep_rate_overall_sedi"] == round(104 / 106, 4)
    assert result["end_to_end_keep_rate_self_instruct"] == round(92 / 108, 4)
    assert "pool_size_at_paper_ratio" in result and result["seconds"] > 0

    rows = [json.loads(line) for line in verdicts.read_text().splitlines()]
    near = [r for r in rows if r["instruction"] in planted]
    assert len(near) == 12 and all(r["self_instruct"] == "rouge" and r["sedi"] == "kept" for r in near)
    from diversity.rouge import rouge_l_f1

    assert all(0.7 < rouge_l_f1(r["instruction"], planted[r["instruction"]]) < 0.85 for r in near)
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)  # replayed in index order


def test_replay_refuses_a_missing_stream_and_a_repeated_seed(tmp_path: Path) -> None:
    done = script("bench_filter_replay", "--streams", str(tmp_path / "absent.jsonl.gz"))
    assert done.returncode == 2 and "absent.jsonl.gz does not exist" in done.stderr
    stream = tmp_path / "a.jsonl.gz"
    synthetic_stream(stream)
    done = script("bench_filter_replay", "--streams", f"{stream},{stream}")
    assert done.returncode == 2 and "same --seed" in done.stderr


def read_stream(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_the_recorder_resumes_a_killed_recording_without_asking_again(tmp_path: Path) -> None:
    from sedi.serve import create_app
    from sedi.stages.generation import request_seed
    from tests.scripted_teacher import ScriptedEngine

    out = tmp_path / "stream.jsonl.gz"
    engine: Any = ScriptedEngine(model_id="gemma-3-270m")  # the server's engine protocol, scripted
    with serve_app(create_app(engine)) as served:
        common = ["--out", str(out), "--base-url", served.base_url, "--concurrency", "3", "--seed", "5"]
        assert script("record_stream", *common, "--n", "6").returncode == 0
        assert served.request_counts["/v1/completions"] == 6
        first = read_stream(out)
        out.write_bytes(out.read_bytes()[:-40])  # killed while writing the last response
        done = script("record_stream", *common, "--n", "10")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        # 5 intact responses kept; the torn one and 4 new ones asked for: 6 + 5 requests in all
        assert served.request_counts["/v1/completions"] == 11
        assert summary["already_recorded"] == 5 and summary["recorded_now"] == 5 and summary["torn_tail_dropped"]
        assert script("record_stream", *common, "--n", "10").returncode == 0  # complete: nothing asked
        assert served.request_counts["/v1/completions"] == 11
        done = script("record_stream", *common[:-1], "6", "--n", "12")  # another seed would mix two streams
        assert done.returncode == 2 and "another --seed" in done.stderr
        assert served.request_counts["/v1/completions"] == 11
    records = read_stream(out)  # the torn member was dropped: the file reads whole
    assert sorted(r["index"] for r in records) == list(range(10))
    by_index = {r["index"]: r for r in records}
    assert all(by_index[r["index"]] == r for r in first)
    seen = served.counter.seen
    torn = first[-1]["index"]  # the last one written (answers arrive in any order at concurrency 3) is asked again
    assert sorted(s.body["seed"] for s in seen) == sorted(request_seed(5, i) for i in [*range(6), torn, *range(6, 10)])
    assert {s.body["temperature"] for s in seen} == {1.0} and {s.body["max_tokens"] for s in seen} == {384}
    assert all(len(r["in_context"]) == 6 and r["in_context"][0].startswith("seed_task_") for r in records)
    assert all(s.body["prompt"].endswith("Task 7\nInstruction:") for s in seen)
    assert {s.body["presence_penalty"] for s in seen} == {0.0}  # the run's sampling settings


def test_the_recorder_keeps_each_penalty_setting_in_its_own_file(tmp_path: Path) -> None:
    from sedi.serve import create_app
    from tests.scripted_teacher import ScriptedEngine

    out = tmp_path / "presence1.jsonl.gz"
    engine: Any = ScriptedEngine(model_id="gemma-3-270m")
    with serve_app(create_app(engine)) as served:
        common = ["--out", str(out), "--base-url", served.base_url, "--concurrency", "2", "--n", "3"]
        assert script("record_stream", *common, "--presence-penalty", "1").returncode == 0
        assert [s.body["presence_penalty"] for s in served.counter.seen] == [1.0] * 3
        assert {s.body["frequency_penalty"] for s in served.counter.seen} == {0.0}
        # the same prompts under another penalty would mix two settings in one stream
        done = script("record_stream", *common[:-1], "4")
        assert done.returncode == 2 and "other penalties" in done.stderr and str(out) in done.stderr
        done = script("record_stream", *common, "--frequency-penalty", "3")
        assert done.returncode == 2 and "--frequency-penalty" in done.stderr
        assert served.request_counts["/v1/completions"] == 3
    assert {r["presence_penalty"] for r in read_stream(out)} == {1.0}


def sampling_stream(path: Path, kept_each: int, missing_each: int, indices: range, **fields: Any) -> None:
    """Responses whose first ``kept_each`` tasks are fresh and whose next ``missing_each`` have no output."""
    rng = random.Random(str(path))
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for index in indices:
            tasks = [f"Describe {' '.join(rng.sample(WORDS, 9))}" for _ in range(kept_each + missing_each)]
            blocks = [block(t) for t in tasks[:kept_each]] + [
                f"{t}\nInput: <noinput>\nOutput:\n" for t in tasks[kept_each:]
            ]
            record = {"index": index, "stream_seed": 0, "request_seed": index, "in_context": []}
            record["text"] = continuation(blocks)
            record |= {"finish_reason": "stop", "prompt_tokens": 400, "completion_tokens": 100} | fields
            handle.write(json.dumps(record) + "\n")


def test_sampling_streams_pair_the_same_prompts_and_say_which_keeps_more(tmp_path: Path) -> None:
    base, penalised, same = (tmp_path / f"{name}.jsonl.gz" for name in ("base", "presence1", "same"))
    sampling_stream(base, 3, 0, range(8))  # no penalties recorded: as the first streams were written
    sampling_stream(penalised, 1, 2, range(7), presence_penalty=1.0, frequency_penalty=0.0)
    sampling_stream(same, 3, 0, range(8), presence_penalty=0.0, frequency_penalty=0.5)
    broken = tmp_path / "broken.jsonl.gz"
    sampling_stream(broken, 0, 3, range(8), presence_penalty=2.0)  # keeps nothing: infinitely many calls per task
    streams = f"{base},{penalised},{same},{broken}"
    done = script("bench_sampling_streams", "--streams", streams, "--bootstrap", "200")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["prompts_compared"] == 7  # index 7 is only in two of the streams
    assert result["settings_0"] == {"presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert result["settings_1"] == {"presence_penalty": 1.0, "frequency_penalty": 0.0}
    assert result["kept_per_request_0"] == 3 and result["kept_per_request_1"] == 1
    assert result["candidates_per_request_1"] == 3 and result["rule_shares_1"]["missing_output"] == round(2 / 3, 3)
    assert result["completion_tokens_per_kept_1"] == 100 and result["completion_tokens_per_kept_0"] == round(100 / 3, 1)
    # every prompt keeps a third as many: the interval is the point, and a third of the tasks is more calls per task
    assert result["kept_ratio_1"] == 0.333 and result["kept_ratio_1_ci95"] == [0.333, 0.333]
    assert result["calls_per_kept_verdict_1"] == "more"
    assert result["kept_ratio_2"] == 1 and result["calls_per_kept_verdict_2"] == "no clear difference in"
    assert result["kept_ratio_3"] == 0 and result["calls_per_kept_verdict_3"] == "more"
    assert result["completion_tokens_per_kept_3"] is None

    other_seed = tmp_path / "other.jsonl.gz"
    sampling_stream(other_seed, 3, 0, range(4))
    with gzip.open(other_seed, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) | {"stream_seed": 1} for line in handle]
    with gzip.open(other_seed, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    done = script("bench_sampling_streams", "--streams", f"{base},{other_seed}")
    assert done.returncode == 2 and "--seed" in done.stderr
    done = script("bench_sampling_streams", "--streams", str(base))
    assert done.returncode == 2 and "at least two" in done.stderr
    disjoint = tmp_path / "later.jsonl.gz"
    sampling_stream(disjoint, 3, 0, range(8, 10))
    done = script("bench_sampling_streams", "--streams", f"{base},{disjoint}")
    assert done.returncode == 2 and "no prompt index" in done.stderr
