"""Which settings a resumed run may change.

A round is planned from the config (sample indices, prompts, request seeds, filters, batches, training),
and the run directory holds what earlier rounds planned and paid for under the config they were started
with. Resuming with a setting that changes the plan would mix two plans in one run: candidate ids reused
by other requests, cached answers replayed for a different teacher, filters and batches that disagree
with earlier rounds. So a resume compares the new effective config with the last one recorded in
``sedi.db`` and refuses every change outside a short allowlist of settings that only decide *how much*
or *how fast* (budget, concurrency, retries, timeouts, round and kept-task limits, held-out evaluation).
A key added to the config later is refused until someone decides it belongs on the allowlist.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from sedi.config.model import GenerationConfig, SediConfig, upgrade_recorded
from sedi.config.seeds import Task
from sedi.exceptions import ConfigError, RunDirError

# meta key of the seed tasks' digest: the plan samples seeds by position, so a resume with other seed tasks
# behind the same seeds.path would mix two plans as surely as a changed setting would.
SEEDS_DIGEST = "seeds_sha256"

# Settings (and whole sections, by prefix) a resumed run may change: none of them alters a request, a
# candidate id, a verdict, a batch or a training step of a round already started.
MAY_CHANGE = (
    "budget",
    "teacher.concurrency",
    "teacher.rpm",
    "teacher.tpm",
    "teacher.timeout_s",
    "teacher.max_retries",
    "teacher.backoff_base_s",
    "teacher.backoff_max_s",
    "teacher.api_key_env",
    "teacher.prices",  # cost accounting only
    "teacher.free",  # cost accounting only
    "teacher.local.startup_timeout_s",
    "teacher.local.device",  # where the same teacher runs; cached answers stay that teacher's
    "teacher.local.precision",
    "run.max_rounds",
    "run.stop_when",  # when to stop: a run stopped by it may resume under a looser rule
    "generation.target_kept",
    "student.heldout_size",
    "student.heldout_generate",
    "student.heldout_max_new_tokens",
    "student.eval_every",
    "student.processes",  # the same steps and batches, split across processes (float rounding only)
    "student.accelerate_config",
    "seeds.heldout_path",  # held-out tasks are measured, never planned from
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _effective_shapes(data: dict[str, Any]) -> dict[str, Any]:
    """``generation.shapes.options`` as the run uses them: a run recorded by a sedi that listed the default shapes
    and one whose null options derive the same shapes from the same settings plan the same requests; under
    ``shaping: fixed`` the options are unused and not compared. A copy."""
    out = json.loads(json.dumps(data))
    gen = out.get("generation")
    if not isinstance(gen, dict) or not isinstance(gen.get("shapes"), dict):
        return out
    if gen.get("shaping", "fixed") == "fixed":
        gen["shapes"].pop("options", None)
    elif gen["shapes"].get("options") is None:
        try:
            options = GenerationConfig.model_validate(gen).shape_options()
        except ValidationError:  # an older section this version cannot read: compared as recorded
            return out
        gen["shapes"]["options"] = [shape.model_dump(mode="json") for shape in options]
    return out


def _known(flat: dict[str, Any], key: str) -> bool:
    """Whether a config has ``key``, as a value or as a section (``teacher.prices: null`` has its fields)."""
    return key in flat or any(key.startswith(k + ".") or k.startswith(key + ".") for k in flat)


def _allowed(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    if any(key == name or key.startswith(name + ".") for name in MAY_CHANGE):
        return True
    if key in ("teacher.base_url", "teacher.base_urls") and _shared_server(old, new):
        return True
    providers = {old.get("teacher.provider"), new.get("teacher.provider")}
    # Each provider ignores the other's settings, so changing them changes no request.
    if key == "teacher.base_url" and providers == {"local"}:
        return True
    return key.startswith("teacher.local.") and providers == {"openai"}


def _servers(flat: dict[str, Any]) -> set[Any]:
    urls = flat.get("teacher.base_urls") or [flat.get("teacher.base_url")]
    return {normalise_url(url) for url in urls} - {None}


def _shared_server(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A pool of servers of one model may grow, shrink or be replaced one by one across resumes (replicas come
    and go), but a resume must keep at least one server the run already used, so it is still that teacher."""
    return bool(_servers(old) & _servers(new))


def normalise_url(url: Any) -> Any:
    """``HTTPS://API.example.com:443/v1/`` and ``https://api.example.com/v1`` name the same server."""
    if not isinstance(url, str):
        return url
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(scheme)
    port = "" if parts.port in (None, default) else f":{parts.port}"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((scheme, host + port, parts.path.rstrip("/"), parts.query, ""))


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) and "\n" not in value else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def changed_settings(previous: dict[str, Any], config: SediConfig) -> list[tuple[str, Any, Any]]:
    """(key, old, new) of every refused change; keys the old config did not have are not compared (an
    older sedi did not know them, and the schema version already guards incompatible run directories)."""
    old, new = _flatten(_effective_shapes(previous)), _flatten(_effective_shapes(config.model_dump(mode="json")))
    old["teacher.base_url"] = normalise_url(old.get("teacher.base_url"))
    new["teacher.base_url"] = normalise_url(new.get("teacher.base_url"))
    if old["teacher.base_url"] is None and old.get("teacher.provider") == "openai":
        # recorded by a sedi that did not yet write the URL it resolved ($OPENAI_BASE_URL): unknown, not changed
        old["teacher.base_url"] = new["teacher.base_url"]
    refused = []
    for key in sorted(set(old) | set(new)):
        if not (_known(old, key) and _known(new, key)):
            continue
        before, after = old.get(key), new.get(key)
        if before != after and not _allowed(key, old, new):
            refused.append((key, before, after))
    return refused


def check_resume(run_dir: Path, config: SediConfig, recorded: str) -> None:
    """Refuse to resume ``run_dir`` with settings that change the plan of its started rounds."""
    try:
        previous = yaml.safe_load(recorded)
    except yaml.YAMLError:
        previous = None
    if not isinstance(previous, dict):
        raise RunDirError(f"{run_dir}: the config recorded in sedi.db is unreadable: use a new --run-dir")
    previous = upgrade_recorded(previous)  # a run started by an earlier version, with today's key names
    refused = changed_settings(previous, config)
    if refused:
        listed = ", ".join(f"{key} ({_shown(before)} -> {_shown(after)})" for key, before, after in refused)
        raise RunDirError(
            f"{run_dir}: cannot resume with changed setting(s) {listed}: they change the plan of rounds "
            "already started; restore them or use a new --run-dir"
        )


def seeds_digest(seeds: list[Task]) -> str:
    """What a run's plan depends on in its seed file: every task's id and text, in order."""
    body = json.dumps([[t.id, t.instruction, t.input, t.output] for t in seeds], ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def check_seeds(run_dir: Path, config: SediConfig, seeds: list[Task], recorded: str | None) -> None:
    """Refuse to resume ``run_dir`` when the seed tasks differ from those it started with."""
    if recorded is not None and recorded != seeds_digest(seeds):
        where = config.seeds.path or "the bundled seed tasks"
        raise ConfigError(
            f"{where}: field 'seeds.path': the seed tasks differ from those the run in {run_dir} started with: "
            "restore them or use a new --run-dir"
        )
