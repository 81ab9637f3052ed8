"""A local stand-in for the Hugging Face Hub: the few endpoints ``huggingface_hub``'s ``HfApi.create_repo`` and
``HfApi.create_commit`` call, speaking the Hub's own protocol, so a push is tested end to end without a network.

Point ``HF_ENDPOINT`` at :attr:`LocalHub.endpoint` (before ``huggingface_hub`` is imported: it reads the
variable once) and the real client creates the repo (``POST /api/repos/create``), validates the card's YAML
(``POST /api/validate-yaml``), asks how to upload each file (``POST /api/{type}s/{repo}/preupload/{rev}``) and
commits (``POST /api/{type}s/{repo}/commit/{rev}``, an NDJSON body: a header line, then one line per file with its
content in base64). The preupload answer says "regular" for every file, as the Hub does for small text files:
so file contents travel inside the commit and the LFS/Xet path (large binary files on the real Hub) is not
exercised here. Every request's Authorization header is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.servers import serve_app


@dataclass
class LocalHub:
    """What the hub received: repos created, files committed (path -> bytes), each request's auth header."""

    endpoint: str = ""
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # "datasets/user/name" -> create payload
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # "datasets/user/name" -> path -> content
    commits: list[dict[str, Any]] = field(default_factory=list)  # header values, in order
    authorizations: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization header)


def _front_matter(content: str) -> Any:
    if not content.startswith("---\n"):
        return {}
    return yaml.safe_load(content[4:].split("\n---\n", 1)[0])


def hub_app(hub: LocalHub) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def record_auth(request: Request, call_next: Any) -> Any:
        hub.authorizations.append((request.url.path, request.headers.get("authorization", "")))
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return JSONResponse({"error": "Invalid credentials in Authorization header"}, status_code=401)
        return await call_next(request)

    @app.post("/api/repos/create")
    async def create(request: Request) -> JSONResponse:
        body = await request.json()
        key = f"{body.get('type', 'model')}s/{body['organization']}/{body['name']}"
        url = f"{hub.endpoint}/{key}"
        if key in hub.repos:  # the Hub names the existing repo in its 409; exist_ok=True reads that url
            return JSONResponse({"error": "You already created this dataset repo", "url": url}, status_code=409)
        hub.repos[key], hub.files[key] = body, {}
        return JSONResponse({"url": url, "name": f"{body['organization']}/{body['name']}"})

    @app.post("/api/validate-yaml")
    async def validate(request: Request) -> JSONResponse:
        try:
            meta = _front_matter((await request.json())["content"])
        except yaml.YAMLError as exc:
            return JSONResponse({"errors": [{"message": str(exc)}]}, status_code=400)
        if not isinstance(meta, dict):
            return JSONResponse({"errors": [{"message": "metadata must be a mapping"}]}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})

    @app.post("/api/{kind}/{org}/{name}/preupload/{revision}")
    async def preupload(kind: str, org: str, name: str, revision: str, request: Request) -> JSONResponse:
        if f"{kind}/{org}/{name}" not in hub.repos:
            return JSONResponse({"error": "Repository not found"}, status_code=404)
        files = (await request.json())["files"]
        modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
        return JSONResponse({"files": modes, "commitOid": "0" * 40})

    @app.post("/api/{kind}/{org}/{name}/commit/{revision}")
    async def commit(kind: str, org: str, name: str, revision: str, request: Request) -> JSONResponse:
        key = f"{kind}/{org}/{name}"
        if key not in hub.repos:
            return JSONResponse({"error": "Repository not found"}, status_code=404)
        body = await request.body()
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                hub.commits.append(item["value"])
            elif item["key"] == "file":
                value = item["value"]
                assert value["encoding"] == "base64", value
                hub.files[key][value["path"]] = base64.b64decode(value["content"])
        oid = hashlib.sha1(body).hexdigest()
        return JSONResponse({"commitUrl": f"{hub.endpoint}/{key}/commit/{oid}", "commitOid": oid})

    return app


@contextmanager
def local_hub() -> Iterator[LocalHub]:
    """A LocalHub served on a loopback port for the duration of the block."""
    hub = LocalHub()
    with serve_app(hub_app(hub)) as served:
        hub.endpoint = served.base_url.removesuffix("/v1")  # serve_app names the OpenAI base URL; the Hub has none
        yield hub
