"""A training round in two processes (torchrun, gloo on CPU, the tiny model) trains the same steps as in one: the
same task ids per step, the same gradient norms and losses to float rounding, hence the same promotions; a killed
two-process round leaves no ``done`` marker and no rank behind, and trains again on the rerun."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from feedback import (
    RoundResult,
    TrainConfig,
    TrainExample,
    launch_round,
    promotions,
    read_steps_jsonl,
    select_attractive,
    train_round,
)
from sedi.config.model import SediConfig
from sedi.store.db import RunStore

torch = pytest.importorskip("torch")

# Task 3 has three instances. Batch [4] has one row: with two processes one rank trains a ghost row.
EXAMPLES = [
    TrainExample(id=i, prompt=f"Say thing {i} please.", completion=" ".join([f"Thing {i}."] * (1 + i % 3)))
    for i in range(1, 9)
] + [TrainExample(id=3, prompt=f"Another way to ask for thing {n}.", completion="Thing 3 again.") for n in range(2)]
BATCHES = [[1, 2, 3], [4], [5, 6, 7], [8, 2]]


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        per_device_batch_size=3, max_length=96, lora_dropout=0.0, precision="float32", device="cpu", learning_rate=1e-2
    )
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def rounds(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RoundResult, RoundResult]:
    root = tmp_path_factory.mktemp("rounds")
    one = train_round(str(tiny_model_dir), EXAMPLES, BATCHES, config(), root / "one")
    two = launch_round(str(tiny_model_dir), EXAMPLES, BATCHES, config(), root / "two", None, processes=2)
    return one, two


@pytest.mark.slow
def test_two_processes_train_the_same_steps_as_one(rounds: tuple[RoundResult, RoundResult]) -> None:
    one, two = rounds
    assert [s.ids for s in two.steps] == [s.ids for s in one.steps] == BATCHES
    assert [s.grad_norm for s in two.steps] == pytest.approx([s.grad_norm for s in one.steps], rel=1e-5)
    assert [s.loss for s in two.steps] == pytest.approx([s.loss for s in one.steps], rel=1e-5)
    assert len({round(s.grad_norm, 3) for s in one.steps}) == len(BATCHES)  # the norms tell the steps apart
    assert read_steps_jsonl(Path(two.adapter_path).parent / "steps.jsonl") == two.steps  # written once, by rank 0
    for interval in (1, 2):
        picked = [select_attractive(r.steps, interval, final=True) for r in rounds]
        assert [a.step for a in picked[0]] == [a.step for a in picked[1]]
        promoted = [promotions(chosen, set(range(1, 9))) for chosen in picked]
        assert [(p.id, p.step) for p in promoted[0]] == [(p.id, p.step) for p in promoted[1]]
        assert [p.value for p in promoted[0]] == pytest.approx([p.value for p in promoted[1]], rel=1e-5)


@pytest.mark.slow
def test_two_processes_save_the_same_adapter(rounds: tuple[RoundResult, RoundResult]) -> None:
    from safetensors.torch import load_file

    one, two = (load_file(str(Path(r.adapter_path) / "adapter_model.safetensors")) for r in rounds)
    assert one.keys() == two.keys()
    # AdamW divides by the root of the squared gradients, so rounding differences of the summed gradients show in
    # the weights more than in the norms: measured at most 1.3e-5 per weight after 3 steps at lr 1e-2 (a step
    # moves a weight by up to 1e-2).
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-4), name


def _store(run_dir: Path) -> list[list[int]]:
    """Round 0 of a run directory: six kept tasks (one with two instances) in two composed batches."""
    with RunStore(run_dir) as store, store.transaction() as db:
        for position in range(6):
            db.execute(
                "INSERT INTO candidates (request_key, position, round, instruction, output, verdict) "
                "VALUES ('r', ?, 0, ?, ?, 'kept')",
                (position, f"Name colour number {position}.", f"Colour {position}."),
            )
        ids = [int(r[0]) for r in db.execute("SELECT id FROM candidates ORDER BY position")]
        rows = [(ids[0], n, f"shade {n}", f"Colour {n}.") for n in range(2)]
        db.executemany("INSERT INTO instances (candidate_id, idx, input, output) VALUES (?, ?, ?, ?)", rows)
        batches = [ids[:3], ids[3:]]
        for index, batch in enumerate(batches):
            db.execute(
                "INSERT INTO batches (round, batch_index, task_ids) VALUES (0, ?, ?)", (index, json.dumps(batch))
            )
    return batches


def _alive(marker: str) -> list[int]:
    """Pids of processes whose command line names ``marker`` (the launch spec: the launcher and its ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


CHILD = """
import sys
from sedi.config.model import SediConfig
from sedi.store.db import RunStore
from sedi.stages.student import train
with RunStore(__import__("pathlib").Path(sys.argv[1])) as store:
    train(store, SediConfig.model_validate_json(sys.argv[2]), 0, losses=False)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the launcher dies with its caller through Linux prctl")
@pytest.mark.parametrize("killed", ["caller", "launcher"])
def test_a_killed_two_process_round_leaves_no_rank_and_trains_again(
    tiny_model_dir: Path, tmp_path: Path, killed: str
) -> None:
    # The caller killed: the launcher dies with it and stops its ranks. The launcher killed outright (no chance to
    # stop them): each rank dies with it.
    from sedi.stages.student import train

    run_dir, round_dir = tmp_path / "run", tmp_path / "run" / "student" / "round-0"
    batches = _store(run_dir)
    train_settings = config(per_device_batch_size=3).model_dump(exclude={"seed"})
    settings = SediConfig.model_validate(
        {"student": {"model": str(tiny_model_dir), "processes": 2, "train": train_settings}}
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), settings.model_dump_json()], start_new_session=True
    )
    spec = round_dir / "launch.json"
    deadline = time.monotonic() + 180
    try:
        # Kill the caller alone as soon as the launcher and both ranks exist: mid-round, before any result. (Waiting
        # for the ranks' log lines raced: on an idle machine the round could finish before they were flushed.)
        while len(_alive(str(spec))) < 3:  # the launcher and two ranks
            assert child.poll() is None and time.monotonic() < deadline, "the two-process round never started"
            time.sleep(0.05)
        if killed == "caller":
            os.kill(child.pid, signal.SIGKILL)
        else:
            (launcher,) = [pid for pid in _alive(str(spec)) if pid in _alive("torch.distributed.run")]
            os.kill(launcher, signal.SIGKILL)
        child.wait(timeout=120)  # the caller, left alone, sees its launch fail
        while _alive(str(spec)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(str(spec)) == []  # no launcher, no rank left training into the round directory
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever this test started and is still there
    assert not (round_dir / "done").exists() and not (round_dir / "launch-result.json").exists()

    with RunStore(run_dir) as store:
        steps = train(store, settings, 0, losses=False)
        recorded = [json.loads(r[0]) for r in store.db.execute("SELECT task_ids FROM train_steps ORDER BY step")]
    assert recorded == [s.ids for s in steps] == batches
    assert (round_dir / "done").is_file() and (round_dir / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["student.processes=0"], "student.processes"),
        (["student.accelerate_config=fsdp.yaml"], "student.processes is 1"),
        (["student.processes=2", "student.accelerate_config=no-such-accelerate.yaml"], "no file no-such-accelerate"),
    ],
)
def test_bad_process_settings_are_refused_before_the_run(overrides: list[str], message: str) -> None:
    from sedi.config.model import load_config
    from sedi.exceptions import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    assert load_config(None, ["student.processes=2"]).student.processes == 2
