"""Planned requests, parsed candidates, their verdicts and instances, in the run database.

Everything here is idempotent: a resumed round re-plans the same requests, re-parses the same cached
responses and recomputes the same verdicts, so writing them again changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sedi.base.vocabulary import KEPT, LENGTH, REFUSED, UNJUDGED, RequestKind, VerdictName
from sedi.exceptions import RunDirError
from sedi.store.db import RunStore


@dataclass(frozen=True)
class PlannedRequest:
    request_key: str
    round: int
    kind: RequestKind
    sample_index: int
    candidate_id: int | None = None
    context: tuple[str, ...] = ()
    shape: str | None = None  # a generation request's shape (generation.shaping), for the per-shape yield


@dataclass(frozen=True)
class Candidate:
    id: int
    request_key: str
    position: int
    round: int
    instruction: str
    input: str
    output: str
    problem: str | None
    truncated_response: bool


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    rule: str | None = None
    detail: Mapping[str, object] | None = None
    pooled: bool = False


def record_requests(store: RunStore, planned: Iterable[PlannedRequest]) -> None:
    with store.transaction() as db:
        db.executemany(
            "INSERT OR IGNORE INTO requests (request_key, round, kind, sample_index, candidate_id, context, shape) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (p.request_key, p.round, p.kind, p.sample_index, p.candidate_id, json.dumps(list(p.context)), p.shape)
                for p in planned
            ],
        )


def record_parse_error(store: RunStore, request_key: str, reason: str | None) -> None:
    store.db.execute("UPDATE requests SET parse_error = ? WHERE request_key = ?", (reason, request_key))


# Candidate ids derive from the request's sample index and the item's position, not from arrival order, so
# that a resumed or repeated run names every task the same way (machine-<id> in the seed pool and datasets).
MAX_ITEMS_PER_RESPONSE = 1000
_MACHINE_PREFIX = "machine-"


def candidate_id(sample_index: int, position: int) -> int:
    return sample_index * MAX_ITEMS_PER_RESPONSE + position


def machine_task_id(candidate_id: int) -> str:
    """The task id of a generated task, ``machine-<candidate id>``, as the seed pool and datasets name it."""
    return f"{_MACHINE_PREFIX}{candidate_id}"


def candidate_id_of(task_id: str) -> int | None:
    """The candidate id in a :func:`machine_task_id`; None for any other task id (a human seed's)."""
    number = task_id.removeprefix(_MACHINE_PREFIX)
    return int(number) if number != task_id and number.isdigit() else None


def add_candidates(
    store: RunStore,
    request_key: str,
    sample_index: int,
    round_index: int,
    items: Sequence[tuple[int, str, str, str, str | None]],
) -> None:
    """Store the items parsed from one response: (position, instruction, input, output, problem).

    Storing the same items again (a resumed round re-parsing its cached responses) changes nothing. An id or
    a (request, position) already taken by *other* content means two plans met in one run (a paid response
    would silently lose its tasks), so that raises RunDirError and the transaction stores nothing."""
    rows = [
        (candidate_id(sample_index, pos), request_key, pos, round_index, ins, inp, out, problem)
        for pos, ins, inp, out, problem in items
        if pos < MAX_ITEMS_PER_RESPONSE
    ]
    with store.transaction() as db:
        for row in rows:
            cid, key, pos, round_, ins, inp, out = row[:7]
            taken = db.execute(  # a repaired output (sedi.stages.repair) is compared as it was parsed
                "SELECT id, request_key, position, round, instruction, input, COALESCE(original_output, output) "
                "FROM candidates "
                "WHERE id = ? OR (request_key = ? AND position = ?)",
                (cid, key, pos),
            ).fetchall()
            if not taken:
                db.execute(
                    "INSERT INTO candidates (id, request_key, position, round, instruction, input, output, problem, "
                    "verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, UNJUDGED),
                )
            elif any(tuple(t) != (cid, key, pos, round_, ins, inp, out) for t in taken):
                raise _conflict(store, cid, key, pos, [dict(t) for t in taken])


def _conflict(store: RunStore, cid: int, key: str, position: int, taken: list[dict[str, object]]) -> RunDirError:
    other = taken[0]
    return RunDirError(
        f"{store.run_dir}: candidate {cid} (request {key[:12]}, item {position}) is already stored with different "
        f"content (request {str(other['request_key'])[:12]}, item {other['position']}, round {other['round']}): "
        "the run's plan changed since those rounds started; resume with the settings they were started with "
        "(config.yaml of the run directory) or use a new --run-dir"
    )


def round_candidates(store: RunStore, round_index: int) -> list[Candidate]:
    """The round's candidates in plan order (request sample index, then position), never arrival order,
    so that filtering decisions are the same however responses raced."""
    rows = store.db.execute(
        "SELECT c.id, c.request_key, c.position, c.round, c.instruction, c.input, c.output, c.problem, "
        "COALESCE(r.finish_reason = ?, 0) AS truncated, q.sample_index "
        "FROM candidates c JOIN requests q ON q.request_key = c.request_key "
        "LEFT JOIN responses r ON r.request_key = c.request_key "
        "WHERE c.round = ? ORDER BY q.sample_index, c.position",
        (LENGTH, round_index),
    ).fetchall()
    return [
        Candidate(
            id=row["id"],
            request_key=row["request_key"],
            position=row["position"],
            round=row["round"],
            instruction=row["instruction"],
            input=row["input"],
            output=row["output"],
            problem=row["problem"],
            truncated_response=bool(row["truncated"]),
        )
        for row in rows
    ]


def set_verdicts(store: RunStore, verdicts: Sequence[tuple[int, Verdict]]) -> None:
    with store.transaction() as db:
        db.executemany(
            "UPDATE candidates SET verdict = ?, rule = ?, detail = ?, pooled = ? WHERE id = ?",
            [
                (v.verdict, v.rule, json.dumps(v.detail, sort_keys=True) if v.detail else None, int(v.pooled), cid)
                for cid, v in verdicts
            ],
        )


def set_instances(
    store: RunStore, candidate_id: int, instances: Sequence[tuple[str, str]], is_classification: bool | None
) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM instances WHERE candidate_id = ?", (candidate_id,))
        db.executemany(
            "INSERT INTO instances (candidate_id, idx, input, output) VALUES (?, ?, ?, ?)",
            [(candidate_id, i, inp, out) for i, (inp, out) in enumerate(instances)],
        )
        db.execute(
            "UPDATE candidates SET is_classification = ? WHERE id = ?",
            (None if is_classification is None else int(is_classification), candidate_id),
        )


def set_repaired(store: RunStore, outputs: Sequence[tuple[int, str]]) -> None:
    """Replace the outputs of candidates with those repair obtained (candidate id, output); the output as parsed
    moves to ``original_output`` (once: a resumed round writing the same repair again keeps it)."""
    with store.transaction() as db:
        db.executemany(
            "UPDATE candidates SET original_output = COALESCE(original_output, output), output = ? WHERE id = ?",
            [(output, cid) for cid, output in outputs],
        )


def pooled_instructions(store: RunStore, before_round: int) -> list[str]:
    """Instructions of earlier rounds that joined the similarity pool, in the order they joined."""
    rows = store.db.execute(
        "SELECT c.instruction FROM candidates c JOIN requests q ON q.request_key = c.request_key "
        "WHERE c.pooled = 1 AND c.round < ? ORDER BY c.round, q.sample_index, c.position",
        (before_round,),
    )
    return [row[0] for row in rows]


def kept_count(store: RunStore) -> int:
    return int(store.db.execute("SELECT COUNT(*) FROM candidates WHERE verdict = ?", (KEPT,)).fetchone()[0])


def kept_instructions(store: RunStore, through_round: int) -> list[str]:
    """The instructions of every task kept up to round ``through_round``, by candidate id."""
    rows = store.db.execute(
        "SELECT instruction FROM candidates WHERE verdict = ? AND round <= ? ORDER BY id", (KEPT, through_round)
    )
    return [str(r[0]) for r in rows]


class RoundCounts(NamedTuple):
    """The cumulative counts a round reports (see :func:`round_counts`)."""

    calls: int  # ledger rows, all rounds, refused attempts left out
    candidates: int  # up to the round
    round_candidates: int
    round_kept: int
    rule_rejects: int  # up to the round, by the rule asked for


def round_counts(store: RunStore, round_index: int, rule: str) -> RoundCounts:
    db = store.db
    calls = db.execute("SELECT COUNT(*) FROM calls WHERE status != ?", (REFUSED,)).fetchone()[0]
    candidates = db.execute("SELECT COUNT(*) FROM candidates WHERE round <= ?", (round_index,)).fetchone()[0]
    in_round, kept = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(verdict = ?), 0) FROM candidates WHERE round = ?", (KEPT, round_index)
    ).fetchone()
    rejects = db.execute(
        "SELECT COUNT(*) FROM candidates WHERE rule = ? AND round <= ?", (rule, round_index)
    ).fetchone()[0]
    return RoundCounts(int(calls), int(candidates), int(in_round), int(kept), int(rejects))
