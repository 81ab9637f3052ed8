"""Decontamination in a run (sedi.stages.decontaminate): a teacher that hands back held-out tasks has them
rejected with rule 'contaminated' and the held-out row named; seeds that copy one, and a bad evaluation file,
stop the run in one line before any request. The checker's own measures are tested in tests/test_decontaminate.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sedi.config.seeds import BUNDLED_HELDOUT, bundled_path
from sedi.serve import create_app
from tests.helpers import rows, scripted_args, sedi, status
from tests.scripted_teacher import ScriptedEngine
from tests.servers import serve_app

pytestmark = pytest.mark.slow  # each test starts `python -m sedi`

ONE_CALL = ("--set", "run.max_rounds=1", "--set", "student.heldout_size=0", "--set", "generation.calls_per_round=1")
HELDOUT_LINE = 18  # "What are the steps to using random (yet coherent) text as filler content within your Word ..."


def _heldout(line: int) -> dict[str, str]:
    row = json.loads(bundled_path(BUNDLED_HELDOUT).read_text(encoding="utf-8").splitlines()[line - 1])
    return {"instruction": row["instruction"], "output": row["instances"][0]["output"]}


class CopyingEngine(ScriptedEngine):
    """The scripted teacher, whose every task list also holds a held-out task verbatim and a near copy of it."""

    def _answer(self, text: str, rng: random.Random) -> str:
        body = super()._answer(text, rng)
        if "Instruction:" not in text:
            return body
        task = _heldout(HELDOUT_LINE)
        near = task["instruction"].replace("What are the steps to using", "What are the steps for using")
        near = near.replace("within your Word document", "within a Word document")
        copies = [(task["instruction"], task["output"].splitlines()[0]), (near, "Type =rand() and press Enter.")]
        extra = "".join(
            f"\nTask {90 + i}\nInstruction: {ins}\nInput: <noinput>\nOutput: {out}\n"
            for i, (ins, out) in enumerate(copies)
        )
        return body + extra


@pytest.mark.slow
def test_held_out_copies_are_rejected_as_contaminated_with_the_row_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = tmp_path / "run"
    with serve_app(create_app(CopyingEngine())) as served:
        result = sedi(*scripted_args(run, served, tiny_model_dir, *ONE_CALL))
    assert result.returncode == 0, result.stderr
    assert status(run)["rejected_by_rule"].get("contaminated") == 2
    details = [json.loads(d) for (d,) in rows(run, "SELECT detail FROM candidates WHERE rule = 'contaminated'")]
    assert {d["matched"] for d in details} == {f"{BUNDLED_HELDOUT}:line {HELDOUT_LINE}"}
    assert {d["measure"] for d in details} == {"exact", "rouge"}  # the verbatim copy, then the near one
    kept = [json.loads(line)["instruction"] for line in (run / "data" / "kept.jsonl").read_text().splitlines()]
    assert kept and not any("filler content" in instruction for instruction in kept)
    # Turned off, the same teacher's copies pass the filters: the rule, not chance, removed them.
    again = tmp_path / "again"
    with serve_app(create_app(CopyingEngine())) as served:
        off = ("--set", "filter.decontaminate_heldout=false")
        assert sedi(*scripted_args(again, served, tiny_model_dir, *ONE_CALL, *off)).returncode == 0
    assert "contaminated" not in status(again)["rejected_by_rule"]


@pytest.mark.parametrize("problem", ["seed copies held-out", "missing file"])
def test_a_seed_copying_an_eval_item_or_a_bad_eval_file_stops_before_any_request(
    problem: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    seeds = tmp_path / "seeds.jsonl"
    own = [
        {"instruction": f"Tell me a fact number {i} about rivers and lakes.", "output": "Rivers flow."}
        for i in range(8)
    ]
    extra: tuple[str, ...] = ("--set", f"seeds.path={seeds}")
    if problem == "seed copies held-out":
        own.insert(3, {**_heldout(HELDOUT_LINE), "input": ""})
    else:
        extra += ("--set", f"filter.decontaminate=['{tmp_path / 'gone.jsonl'}']")
    seeds.write_text("".join(json.dumps(row) + "\n" for row in own), encoding="utf-8")
    with serve_app(create_app(CopyingEngine())) as served:
        result = sedi(*scripted_args(tmp_path / "run", served, tiny_model_dir, *ONE_CALL, *extra))
        assert served.counter.total == 0  # nothing asked of the teacher
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if problem == "seed copies held-out":
        assert f"{seeds}: seed 4" in result.stderr and f"{BUNDLED_HELDOUT}:line {HELDOUT_LINE}" in result.stderr
    else:
        assert "filter.decontaminate" in result.stderr and "gone.jsonl" in result.stderr
