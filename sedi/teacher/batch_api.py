"""The Batch API path of the teacher client (``teacher.batch_api``): a call's requests go out as one OpenAI batch job.

:meth:`sedi.teacher.client.TeacherClient.complete_all` hands its requests here. Each is answered from the response cache
when already paid for; the rest reserve their worst case (at the batch prices, ``teacher.prices.batch_api_discount``)
and as many as the budget allows become one job: its rows are written (:func:`sedi.teacher.batch_jobs.create_job`: a job
row with a random marker, one ledger row per request), then the input file is uploaded (``files.create``, purpose
``batch``), the job is created (``batches.create``, completion window 24h, ``metadata={"sedi_job": marker}``) and
polled every ``teacher.batch_api_poll_s`` until it ends. Its output and error files are then read and every line is
mapped back by ``custom_id`` (``call-<ledger row id>``) to its ledger row, which is completed, and for an answer
cached, in one transaction as on the synchronous path, and its reservation settled. Lines that failed (an error
line, a 429 or 5xx inside the batch, a failed or expired job, a missing line) go out again in a later job, up to
``teacher.max_retries``; those the budget refused wait for the job before them and are refused for good (the
call's ``budget_stop``) only when they do not fit with nothing in flight, as on the synchronous path.

Never two jobs for the same requests. A job's id exists only once ``batches.create`` has returned, so it cannot
be stored before the job is created; what is stored before is the job row and its marker, which the provider
keeps with the job (metadata) and its input file (its name, ``sedi-<marker>.jsonl``). A process killed at any
point leaves the job row and its ledger rows (marked 'interrupted' when the store next opens, charged their
reservation). The next start takes these rows back as reservations (:meth:`sedi.teacher.budget.Budget.adopt`) and goes
on from the last step recorded: a recorded job is polled again; a job created but not recorded is found by
listing the provider's jobs (``batches.list``, newest first) for the marker, and a file uploaded but not recorded
by listing its files, before anything is uploaded or created again. The same search runs before a create or an
upload is retried after an error, since a request that timed out may have succeeded.

A cancelled job stops the call with a :class:`~sedi.exceptions.TeacherError` (sedi never cancels its own jobs, so
a person did); its answered lines are kept and a rerun sends the rest. The client's rate limits
(``teacher.rpm``/``tpm``) do not apply: batch jobs are limited by the provider's queue, not per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

from sedi.base.faults import crash_point
from sedi.base.files import dumps
from sedi.base.redact import redact
from sedi.base.vocabulary import AttemptOutcome, CachedResponse, Usage
from sedi.config.teacher import TeacherConfig
from sedi.exceptions import BudgetExceeded, TeacherError
from sedi.store.db import RunStore, ledger
from sedi.teacher import batch_jobs
from sedi.teacher.batch_jobs import Job, Line
from sedi.teacher.budget import Budget, batch_prices, worst_case
from sedi.teacher.outcomes import Malformed, UsageMisreported, answer_outcome, charge, checked_text, misreport_message
from sedi.teacher.request import TeacherRequest, TeacherResponse, request_key
from sedi.teacher.retry import JOB_LINE, RetryPolicy, retry_after, retryable_status

T = TypeVar("T")
MAX_LINES = 50_000  # the most requests OpenAI takes in one batch input file
LIST_SLACK_S = 3600.0  # a job or file listed as created this long before its row was written is not ours


@dataclass
class _Ended:
    """How one line ended: an answer, or a failure that may be retried."""

    response: TeacherResponse | None = None
    retryable: bool = False
    summary: str = ""
    misreport: str | None = None


class BatchSender:
    """Sends a :class:`~sedi.teacher.client.TeacherClient`'s requests as batch jobs (see the module docstring)."""

    def __init__(
        self,
        config: TeacherConfig,
        store: RunStore,
        budget: Budget,
        connect: Callable[[], Awaitable[openai.AsyncOpenAI]],
        cache_hit: Callable[[str], TeacherResponse | None],
        *,
        tokens_per_byte: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config, self.store, self.budget = config, store, budget
        self._retry = retry or RetryPolicy.of(config)
        self._connect, self._cache_hit, self._sleep = connect, cache_hit, sleep
        self._tokens_per_byte = tokens_per_byte
        self._prices = batch_prices(config.prices)
        self._chat = config.mode == "chat"
        self._resumed = False
        self._url = "?"

    def _writes(self) -> Any:
        return ledger.ledger_writes(self.store.run_dir / self.store.DB_NAME)

    async def complete_all(
        self, requests: Sequence[TeacherRequest], on_done: Callable[[int, TeacherResponse], None] | None = None
    ) -> tuple[list[TeacherResponse | None], BudgetExceeded | None]:
        """Responses in request order (None where not obtained) and the budget refusal that stopped sending, if any.
        A request that fails in every job it is allowed raises :class:`TeacherError` once its job is recorded."""
        await self.resume()
        results: list[TeacherResponse | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}  # cache key -> the indices asking it (identical requests pay once)
        payloads = [r.payload(self.config.model, self.config.mode) for r in requests]
        for i, payload in enumerate(payloads):
            key = request_key(payload)
            hit = self._cache_hit(key)
            if hit is None:
                pending.setdefault(key, []).append(i)
            else:
                results[i] = hit
                if on_done is not None:
                    on_done(i, hit)
        failures = dict.fromkeys(pending, 0)
        retry = 0
        while pending:
            planned, refusal = self._reserve(pending, requests, payloads)
            if not planned:
                return results, refusal  # nothing fits even with nothing in flight
            job = self._new_job(planned)
            ended = await self._finish(job)
            fatal: str | None = None
            for line in job.lines:
                outcome = ended[line.call_id]
                if outcome.response is not None:
                    for i in pending.pop(line.key):
                        results[i] = outcome.response
                        if on_done is not None:
                            on_done(i, outcome.response)
                elif not outcome.retryable or failures[line.key] >= self._retry.max_retries:
                    fatal = fatal or outcome.summary
                else:
                    failures[line.key] += 1
            if fatal is not None:
                raise self._retry.exhausted(self._url, fatal, unreachable=False, step=JOB_LINE)
            if pending:
                await self._sleep(self._retry.delay(retry))  # a failed line carries no Retry-After
                retry += 1
        return results, None

    async def resume(self) -> None:
        """Finish the jobs an earlier process left (once per client): their answers are paid for, so they are
        collected into the cache before anything is sent, with ``teacher.batch_api`` on or off."""
        if self._resumed:
            return
        self._resumed = True
        with self._writes():
            jobs = batch_jobs.open_jobs(self.store.db)
        for job in jobs:
            await self._finish(job)

    # -- one job -------------------------------------------------------------------------------
    def _reserve(
        self, pending: dict[str, list[int]], requests: Sequence[TeacherRequest], payloads: list[dict[str, Any]]
    ) -> tuple[list[tuple[str, dict[str, Any], Usage]], BudgetExceeded | None]:
        """Reserve the worst case of as many pending requests as fit (nothing is in flight between jobs)."""
        planned: list[tuple[str, dict[str, Any], Usage]] = []
        for key, indices in pending.items():
            worst = worst_case(requests[indices[0]], self._prices, self._tokens_per_byte)
            try:
                planned.append((key, payloads[indices[0]], self.budget.reserve_now(worst)))
            except BudgetExceeded as refusal:
                return planned, refusal
            if len(planned) == MAX_LINES:
                break
        return planned, None

    def _new_job(self, planned: list[tuple[str, dict[str, Any], Usage]]) -> Job:
        endpoint = "/v1/chat/completions" if self._chat else "/v1/completions"
        try:
            with self._writes(), self.store.transaction() as db:
                return batch_jobs.create_job(db, endpoint, self.config.model, planned)
        except BaseException:
            for _, _, reservation in planned:  # nothing was written, so nothing left
                self.budget.settle(reservation, Usage())
            raise

    async def _finish(self, job: Job) -> dict[int, _Ended]:
        """Upload, create, poll and record ``job`` from wherever it stands; every reservation is settled, at its
        line's charge or, if this ends in an error, at its worst case (the job may still run)."""
        if job.resumed and not job.lines:  # every line was recorded before the process ended
            with self._writes():
                batch_jobs.record_status(self.store.db, job, "recorded", ended=True)
            return {}
        try:
            if job.resumed:
                for line in job.lines:
                    line.reservation = self.budget.adopt(line.reservation)
                with self._writes():
                    batch_jobs.reopen_lines(self.store.db, job)
            client = await self._connect()
            self._url = str(client.base_url).rstrip("/")
            if job.batch_id is None and job.input_file_id is None:
                await self._upload(client, job)
            if job.batch_id is None:
                await self._create(client, job)
            batch = await self._wait(client, job)
            return await self._collect(client, job, batch)
        finally:
            for line in job.lines:
                if not line.settled:
                    self.budget.settle(line.reservation, line.reservation)

    async def _upload(self, client: openai.AsyncOpenAI, job: Job) -> None:
        async def find() -> str | None:
            async for item in client.files.list(purpose="batch", order="desc"):
                if item.filename == job.filename:
                    return item.id
                if item.created_at < job.created_at - LIST_SLACK_S:
                    break
            return None

        async def upload() -> str:
            file = (job.filename, batch_jobs.input_file(job), "application/jsonl")
            return (await client.files.create(file=file, purpose="batch")).id

        file_id = await self._control("upload of the batch input file", upload, find if job.resumed else None, find)
        with self._writes():
            batch_jobs.record_file(self.store.db, job, file_id)

    async def _create(self, client: openai.AsyncOpenAI, job: Job) -> None:
        async def find() -> str | None:
            async for item in client.batches.list(limit=100):
                if (item.metadata or {}).get(batch_jobs.METADATA_KEY) == job.marker:
                    return item.id
                if item.created_at < job.created_at - LIST_SLACK_S:
                    break
            return None

        async def create() -> str:
            assert job.input_file_id is not None
            batch = await client.batches.create(
                input_file_id=job.input_file_id,
                endpoint=job.endpoint,  # type: ignore[arg-type]  # one of the two literals sedi writes
                completion_window="24h",
                metadata={batch_jobs.METADATA_KEY: job.marker},
            )
            crash_point("batch:created")  # tests: killed before the id is recorded
            return batch.id

        batch_id = await self._control("creation of the batch job", create, find if job.resumed else None, find)
        with self._writes():
            batch_jobs.record_batch(self.store.db, job, batch_id)

    async def _wait(self, client: openai.AsyncOpenAI, job: Job) -> Any:
        assert job.batch_id is not None
        batch_id, last = job.batch_id, ""
        while True:
            batch = await self._control(
                f"status check of batch job {batch_id}", lambda: client.batches.retrieve(batch_id)
            )
            if batch.status != last:
                last = batch.status
                with self._writes():
                    batch_jobs.record_status(self.store.db, job, last)
            if last in batch_jobs.TERMINAL:
                return batch
            await self._sleep(self.config.batch_api_poll_s)

    async def _collect(self, client: openai.AsyncOpenAI, job: Job, batch: Any) -> dict[int, _Ended]:
        found: dict[str, dict[str, Any]] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # an output line wins over an error line
            if file_id:
                found.update(batch_jobs.read_lines(await self._download(client, file_id)))
        errors = getattr(batch.errors, "data", None) or []
        why = f"batch job {batch.id} {batch.status}" + (f" ({errors[0].message})" if errors else "")
        ended = {line.call_id: self._record(line, found.get(line.custom_id), batch, why) for line in job.lines}
        with self._writes():
            batch_jobs.record_status(self.store.db, job, batch.status, ended=True)
        misreports = [e.misreport for e in ended.values() if e.misreport is not None]
        if misreports:
            raise UsageMisreported(misreports[0])
        if batch.status == "cancelled":
            raise TeacherError(
                f"{why}: sedi never cancels its jobs, so it was cancelled outside this run; the answers it returned "
                "are kept: run the same command again to send the rest in a new job"
            )
        return ended

    async def _download(self, client: openai.AsyncOpenAI, file_id: str) -> str:
        async def get() -> str:
            return (await client.files.content(file_id)).text

        return await self._control(f"download of {file_id}", get)

    # -- one line --------------------------------------------------------------------------------
    def _record(self, line: Line, out: dict[str, Any] | None, batch: Any, why: str) -> _Ended:
        """Complete ``line``'s ledger row (caching an answer in the same transaction) and settle its reservation."""
        latency = max(time.time() - float(batch.created_at), 0.0)
        failure = batch_jobs.line_failure(out, batch.status, line, latency, why)
        if failure is None:
            try:
                return self._answer(line, (out or {})["response"].get("body"), latency)
            except Malformed as exc:
                failed = AttemptOutcome("error", 200, charged=line.reservation, latency_s=latency,
                                        error_class="MalformedResponse", error=str(exc))  # fmt: skip
                failure = failed, True
        outcome, retryable = failure
        self._finish_row(line, outcome, None)
        return _Ended(None, retryable, f"{outcome.error_class}: {outcome.error}")

    def _answer(self, line: Line, body: Any, latency: float) -> _Ended:
        text, finish, usage = batch_jobs.read_answer(body, self._chat)
        max_tokens = int(line.payload["max_tokens"])
        text = checked_text(text, max_tokens)  # raises Malformed, as read_answer does
        worst = line.reservation
        found = charge(usage, worst, self._prices)
        misreport = misreport_message(self._url, found, worst, max_tokens) if found.over_reservation else None
        cached = CachedResponse(line.key, text, finish, found.prompt_tokens, found.completion_tokens)
        self._finish_row(line, answer_outcome(found, finish, latency, misreport), (dumps(line.payload), cached))
        answer = TeacherResponse(line.key, text, finish, found.prompt_tokens, found.completion_tokens, False)
        return _Ended(answer, misreport=misreport)

    def _finish_row(self, line: Line, outcome: AttemptOutcome, response: tuple[str, CachedResponse] | None) -> None:
        charged = line.reservation  # if the row cannot be written, the line stays charged its worst case
        try:
            self.store.finish_attempt(line.call_id, outcome, response)
            charged = outcome.charged
        finally:
            line.settled = True
            self.budget.settle(line.reservation, charged)

    # -- control requests (upload, create, status, download) ---------------------------------------
    async def _control(
        self,
        what: str,
        send: Callable[[], Awaitable[T]],
        first: Callable[[], Awaitable[T | None]] | None = None,
        before_retry: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """``send`` with up to ``teacher.max_retries`` retries on 429, 5xx and connection errors, waiting as the
        synchronous path does (:mod:`sedi.teacher.retry`: Retry-After, else jittered backoff); ``first`` (and
        ``before_retry`` before each retry) may find what an earlier attempt already made. These requests cost
        nothing and are not ledger rows."""
        last, all_connect = "", True
        for retry in range(self._retry.attempts):
            wait: float | None = None
            try:
                look = first if retry == 0 else before_retry
                found = await look() if look is not None else None
                return found if found is not None else await send()
            except openai.APIStatusError as exc:
                all_connect, last = False, f"HTTP {exc.status_code}: {redact(str(exc)).splitlines()[0][:200]}"
                if not retryable_status(exc.status_code):
                    raise TeacherError(batch_jobs.refused(self._url, what, exc, self.config.api_key_env)) from exc
                wait = retry_after(exc.response)
            except openai.APIConnectionError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if retry < self._retry.max_retries:
                await self._sleep(self._retry.delay(retry, wait))
        raise self._retry.exhausted(self._url, last, unreachable=all_connect, step=what)
