"""The Batch API's jobs and wire format: a job and its lines as the driver holds them, kept in the ``batch_jobs``
and ``batch_lines`` tables (their queries: :mod:`sedi.store.batch_jobs_table`), and the JSONL lines sent to and read
back from a provider in OpenAI's batch format.

A job row and its lines (each with its ledger row) are written in one transaction before anything leaves, so a
killed process leaves either nothing or a job it can resume; every later step (input file uploaded, job created,
job ended) is recorded as soon as it happened. The driver is :mod:`sedi.teacher.batch_api`.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion

from sedi.base.files import dumps
from sedi.base.redact import redact
from sedi.base.vocabulary import AttemptOutcome, Usage
from sedi.store import batch_jobs_table as table
from sedi.store import ledger
from sedi.teacher.outcomes import Malformed
from sedi.teacher.retry import retryable_status

# The provider's terminal statuses (openai.types.Batch.status); the others (validating, in_progress, finalizing,
# cancelling) mean the job is still going.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
METADATA_KEY = "sedi_job"  # the job's metadata entry holding its marker


@dataclass
class Line:
    """One request of a job: its ledger row, cache key, the request as the cache stores it, and its reservation."""

    call_id: int
    key: str
    payload: dict[str, Any]
    reservation: Usage
    settled: bool = False

    @property
    def custom_id(self) -> str:
        return f"call-{self.call_id}"


@dataclass
class Job:
    id: int
    marker: str
    endpoint: str  # the API path every line targets, e.g. "/v1/completions"
    input_file_id: str | None
    batch_id: str | None
    created_at: float
    lines: list[Line]
    resumed: bool = False  # left by an earlier process: its file or job may exist without a record of it

    @property
    def filename(self) -> str:
        return f"sedi-{self.marker}.jsonl"


def create_job(
    db: sqlite3.Connection, endpoint: str, model: str, planned: list[tuple[str, dict[str, Any], Usage]]
) -> Job:
    """Write a job with one line and one 'sent' ledger row per ``(key, payload, reservation)``; the caller holds the
    transaction, so the job and its ledger rows exist together or not at all."""
    now, marker = time.time(), uuid.uuid4().hex
    job = Job(table.insert_job(db, marker, endpoint, now), marker, endpoint, None, None, now, [])
    label = endpoint.removeprefix("/v1/")  # the ledger's endpoint names, as the synchronous path writes them
    for key, payload, reservation in planned:
        call_id = ledger.insert_attempt(db, key, 0, model, label, reservation.tokens, reservation.cost_usd)
        table.insert_line(db, call_id, job.id, dumps(payload))
        job.lines.append(Line(call_id, key, payload, reservation))
    return job


def open_jobs(db: sqlite3.Connection) -> list[Job]:
    """Jobs an earlier process left before their end, with the lines it had not recorded. Those lines' ledger rows
    were marked 'interrupted' and charged their reservation when the store opened; each line's ``reservation`` is
    that charge, and its row goes back to 'sent' (in flight again) in :func:`reopen_lines`."""
    jobs = []
    for row in table.unended_jobs(db):
        job = Job(row.id, row.marker, row.endpoint, row.input_file_id, row.batch_id, row.created_at, [], resumed=True)
        for line in table.interrupted_lines(db, job.id):
            job.lines.append(Line(line.call_id, line.request_key, json.loads(line.request), line.charged))
        jobs.append(job)
    return jobs


def reopen_lines(db: sqlite3.Connection, job: Job) -> None:
    """Put the job's unrecorded lines back in flight: 'sent', charged nothing (the budget holds their reservation)."""
    table.reopen_calls(db, [line.call_id for line in job.lines])


def record_file(db: sqlite3.Connection, job: Job, file_id: str) -> None:
    job.input_file_id = file_id
    table.record_file(db, job.id, file_id)


def record_batch(db: sqlite3.Connection, job: Job, batch_id: str) -> None:
    """The job's id at the provider, on the job and on every ledger row it carries, in one transaction."""
    job.batch_id = batch_id
    table.record_batch(db, job.id, batch_id)


def record_status(db: sqlite3.Connection, job: Job, status: str, *, ended: bool = False) -> None:
    table.record_status(db, job.id, status, ended=ended)


def api_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The body of one request as the API takes it, from the request as the cache stores it (the same fields the
    synchronous path sends: :func:`sedi.teacher.outcomes.send`)."""
    keys = ("model", "max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty")
    body = {key: payload[key] for key in keys}
    if payload.get("stop"):
        body["stop"] = list(payload["stop"])
    if payload.get("seed") is not None:
        body["seed"] = payload["seed"]
    if payload["mode"] == "chat":
        body["messages"] = payload["messages"]
    else:
        body["prompt"] = payload["prompt"]
    return body


def input_file(job: Job) -> bytes:
    """The job's input file: one JSONL request per line, ``custom_id`` naming its ledger row."""
    lines = [
        dumps({"custom_id": line.custom_id, "method": "POST", "url": job.endpoint, "body": api_body(line.payload)})
        for line in job.lines
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def read_lines(text: str) -> dict[str, dict[str, Any]]:
    """An output or error file's lines by ``custom_id``; a line that is not a JSON object with one is skipped (its
    request then counts as unanswered)."""
    found: dict[str, dict[str, Any]] = {}
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            found[line["custom_id"]] = line
    return found


def line_failure(
    out: dict[str, Any] | None, job_status: str, line: Line, latency: float, why: str
) -> tuple[AttemptOutcome, bool] | None:
    """How a line that brought no answer ends (its ledger outcome, and whether it may go out again in a later
    job), from its output or error line ``out`` and the job's status; None for a 200 answer."""
    response = out.get("response") if out is not None else None
    error = out.get("error") if out is not None else None
    status = response.get("status_code") if isinstance(response, dict) else None
    if status == 200:
        return None
    if isinstance(response, dict) and isinstance(status, int):  # the provider answered it with an error: not billed
        message = str(((response.get("body") or {}).get("error") or {}).get("message") or f"HTTP {status}")[:300]
        outcome = AttemptOutcome("error", status, charged=Usage(1), latency_s=latency,
                                 error_class="BatchLineError", error=message)  # fmt: skip
        return outcome, retryable_status(status)
    if isinstance(error, dict) or job_status != "completed":  # not run: the job expired, was cancelled or failed
        code = str((error or {}).get("code") or f"batch_{job_status}")
        message = str((error or {}).get("message") or why)[:300]
        outcome = AttemptOutcome("error", None, charged=Usage(1), latency_s=latency, error_class=code, error=message)
        return outcome, job_status != "cancelled"
    # A completed job without this line: it may have run and been billed, so it is charged its worst case.
    outcome = AttemptOutcome("error", None, charged=line.reservation, latency_s=latency,
                             error_class="BatchLineMissing", error=f"{why}: no line for {line.custom_id}")  # fmt: skip
    return outcome, True


def refused(url: str, what: str, exc: openai.APIStatusError, key_env: str) -> str:
    if exc.status_code in (401, 403):
        return f"teacher at {url} rejected the API key at the {what} (HTTP {exc.status_code}): check ${key_env}"
    if exc.status_code == 404:
        return (
            f"teacher at {url} has no Batch API (HTTP 404 at the {what}): set teacher.batch_api: false, or point "
            "teacher.base_url at an endpoint with /v1/files and /v1/batches"
        )
    detail = redact(str(exc).splitlines()[0])[:300]  # redacted before the cut, so no half of a key survives it
    return f"teacher at {url} refused the {what} (HTTP {exc.status_code}: {detail}): fix the teacher config"


def read_answer(body: Any, chat: bool) -> tuple[str, str | None, Any]:
    """(text, finish reason, usage as received) of a batch line's 200 body; :class:`Malformed` without usable text.
    Built leniently (the openai models' ``construct``), as the client parses a synchronous response."""
    if not isinstance(body, dict):
        raise Malformed("batch line has no response body")
    parsed: Any = ChatCompletion.construct(**body) if chat else Completion.construct(**body)
    choices = getattr(parsed, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise Malformed("response has no choices")
    try:
        text = choices[0].message.content if chat else choices[0].text
        finish = choices[0].finish_reason
    except AttributeError as exc:
        raise Malformed(f"response has no text ({exc})") from None
    if not isinstance(text, str):
        raise Malformed("response has no text")
    return text, finish if isinstance(finish, str) else None, getattr(parsed, "usage", None)
