"""OpenAI's Batch API on a loopback port, for ``tests/test_batch_api.py``: a Starlette app serving ``POST /v1/files``
(multipart, purpose ``batch``), ``GET /v1/files`` (list), ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/batches`` (list, newest first, with metadata) and
``POST /v1/batches/{id}/cancel``, with the shapes of OpenAI's reference (``openai.types.Batch``, ``FileObject``).

Serve it with ``tests.servers.serve_app(BatchServer(answer).app)``. A job moves one status per ``step_s`` seconds
each time it is looked at: ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``, and stays
``in_progress`` while ``hold`` is set. Its lines are answered, when it finalizes, by the ASGI app ``answer`` (an
OpenAI-compatible server, e.g. ``sedi.serve.create_app(ScriptedEngine())``) and written as output lines
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}``; a non-200 answer goes to
the error file. Each created job takes the next fault of ``faults`` ("ok" once empty):

- ``ok``; ``partial``: every second line is answered 500 (error file), the others normally;
- ``failed``: validation fails (``errors.data``), no line runs;
- ``expired`` / ``cancelled``: after ``in_progress`` the job expires (or is cancelled, through ``cancelling``)
  with its first half of lines answered and the rest in the error file with ``response: null`` and
  ``error: {"code": "batch_expired" | "batch_cancelled", ...}``, as OpenAI writes them.

It counts what it did: ``created`` (batch ids in creation order), ``uploads``, ``runs`` (times each request body
was executed, keyed by its canonical JSON) and ``lines_by_job``.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TERMINAL = {"completed", "failed", "expired", "cancelled"}
_NEXT = {  # fault -> status -> next status
    "ok": {"validating": "in_progress", "in_progress": "finalizing", "finalizing": "completed"},
    "failed": {"validating": "failed"},
    "expired": {"validating": "in_progress", "in_progress": "expired"},
    "cancelled": {"validating": "in_progress", "in_progress": "cancelling", "cancelling": "cancelled"},
}
_NEXT["partial"] = _NEXT["ok"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": None}}, status)


@dataclass
class _Job:
    body: dict[str, Any]  # the batch object as served
    fault: str
    lines: list[dict[str, Any]]
    next_at: float
    ran: bool = False


@dataclass
class BatchServer:
    answer: Any  # ASGI app answering /v1/completions and /v1/chat/completions
    step_s: float = 0.05
    hold: bool = False
    faults: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    uploads: int = 0
    runs: Counter[str] = field(default_factory=Counter)
    lines_by_job: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/files", self.upload, methods=["POST"]),
                Route("/v1/files", self.list_files, methods=["GET"]),
                Route("/v1/files/{file_id}/content", self.content, methods=["GET"]),
                Route("/v1/batches", self.create, methods=["POST"]),
                Route("/v1/batches", self.list_batches, methods=["GET"]),
                Route("/v1/batches/{batch_id}", self.retrieve, methods=["GET"]),
                Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
            ]
        )

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def _file(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        meta = {"id": self._new_id("file"), "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None}  # fmt: skip
        self.files[meta["id"]] = (meta, data)
        return meta

    # -- files -----------------------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        raw = await request.body()
        head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        if not message.is_multipart():
            return _error(400, "expected multipart/form-data")
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")  # type: ignore[union-attr]
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch" or "file" not in fields:
            return _error(400, f"purpose must be 'batch' with a file, got {purpose!r}")
        filename, data = fields["file"]
        self.uploads += 1
        return JSONResponse(self._file(filename or "upload.jsonl", purpose, data))

    async def list_files(self, request: Request) -> Response:
        purpose = request.query_params.get("purpose")
        data = [meta for meta, _ in self.files.values() if purpose is None or meta["purpose"] == purpose]
        if request.query_params.get("order", "desc") == "desc":
            data.reverse()
        return JSONResponse({"object": "list", "data": data, "has_more": False})

    async def content(self, request: Request) -> Response:
        found = self.files.get(request.path_params["file_id"])
        if found is None:
            return _error(404, "no such file")
        return Response(found[1], media_type="application/octet-stream")

    # -- batches ---------------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        body = await request.json()
        found = self.files.get(str(body.get("input_file_id")))
        if found is None or found[0]["purpose"] != "batch":
            return _error(400, "input_file_id must name a file uploaded with purpose 'batch'")
        if body.get("completion_window") != "24h" or body.get("endpoint") not in (
            "/v1/completions",
            "/v1/chat/completions",
        ):
            return _error(400, "completion_window must be '24h' and endpoint a completions endpoint")
        lines = [json.loads(line) for line in found[1].decode().splitlines() if line.strip()]
        with self._lock:
            fault = self.faults.pop(0) if self.faults else "ok"
            batch_id = self._new_id("batch")
            self.created.append(batch_id)
        now = int(time.time())
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "expires_at": now + 86400,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}  # fmt: skip
        bad = [i for i, line in enumerate(lines) if line.get("url") != body["endpoint"] or line.get("method") != "POST"]
        if bad or len({line.get("custom_id") for line in lines}) != len(lines):
            fault = "failed"
        self.jobs[batch_id] = _Job(batch, fault, lines, time.monotonic() + self.step_s)
        self.lines_by_job[batch_id] = [str(line.get("custom_id")) for line in lines]
        return JSONResponse(batch)

    async def retrieve(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["batch_id"])
        if job is None:
            return _error(404, "no such batch")
        await self._advance(job)
        return JSONResponse(job.body)

    async def list_batches(self, request: Request) -> Response:
        ordered = list(reversed(self.jobs.values()))
        after = request.query_params.get("after")
        if after is not None:
            ids = [job.body["id"] for job in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query_params.get("limit", 20))
        page = [job.body for job in ordered[:limit]]
        first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
        return JSONResponse(
            {"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": len(ordered) > limit}
        )

    async def cancel(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["batch_id"])
        if job is None:
            return _error(404, "no such batch")
        if job.body["status"] not in TERMINAL:
            job.fault, job.body["status"] = "cancelled", "cancelling"
        return JSONResponse(job.body)

    # -- a job's life ----------------------------------------------------------------------------
    async def _advance(self, job: _Job) -> None:
        status = job.body["status"]
        while status not in TERMINAL and time.monotonic() >= job.next_at:
            if self.hold and status == "in_progress":
                return
            status = _NEXT[job.fault][status]
            job.body["status"], job.next_at = status, job.next_at + self.step_s
            job.body[f"{status}_at"] = int(time.time())
            if status == "failed":
                job.body["errors"] = {"object": "list", "data": [
                    {"code": "invalid_request", "line": 1, "message": "the input file failed validation", "param": None}
                ]}  # fmt: skip
            elif status in ("finalizing", "expired", "cancelled"):
                await self._run(job)

    async def _run(self, job: _Job) -> None:
        if job.ran:
            return
        job.ran = True
        outputs, errors = [], []
        half = len(job.lines) if job.fault in ("ok", "partial") else len(job.lines) // 2
        transport = httpx2.ASGITransport(app=self.answer)
        async with httpx2.AsyncClient(transport=transport, base_url="http://answer") as client:
            for i, line in enumerate(job.lines):
                entry: dict[str, Any] = {"id": f"batch_req_{i}", "custom_id": line["custom_id"], "error": None}
                if i >= half:
                    code = f"batch_{job.fault}"
                    entry.update(response=None, error={"code": code, "message": f"request not run: job {job.fault}"})
                    errors.append(entry)
                    continue
                if job.fault == "partial" and i % 2 == 1:
                    body: Any = {"error": {"message": "server error inside the batch", "type": "server_error"}}
                    status = 500
                else:
                    self.runs[json.dumps(line["body"], sort_keys=True)] += 1
                    answered = await client.post(line["url"], json=line["body"])
                    body, status = answered.json(), answered.status_code
                entry["response"] = {"status_code": status, "request_id": f"req_{i}", "body": body}
                (outputs if status == 200 else errors).append(entry)
        for name, entries in (("output_file_id", outputs), ("error_file_id", errors)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                job.body[name] = self._file(f"{job.body['id']}_{name}.jsonl", "batch_output", data)["id"]
        job.body["request_counts"] = {"total": len(job.lines), "completed": len(outputs), "failed": len(errors)}
