"""Teacher settings refused or accepted before anything is sent: prices for a remote teacher, bounded waits, keys
never echoed, a pool of servers, and which server changes a resume accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sedi.config.model import SediConfig, load_config
from sedi.config.seeds import load_tasks
from sedi.exceptions import ConfigError
from sedi.stages.resume import changed_settings
from sedi.teacher.endpoint import openai_endpoints


@pytest.mark.parametrize(
    ("teacher", "error"),
    [
        ({"base_url": "https://api.example.invalid/v1"}, r"field 'teacher.prices' is not set.*teacher.free: true"),
        ({"base_url": "https://api.example.invalid/v1", "free": True}, None),
        ({"base_url": "https://api.example.invalid/v1", "prices": {"prompt": 1}}, None),
        ({"base_url": "http://127.0.0.1:9/v1"}, None),
    ],
)
def test_a_remote_teacher_needs_prices_or_free(
    monkeypatch: pytest.MonkeyPatch, teacher: dict[str, Any], error: str | None
) -> None:
    monkeypatch.setenv("SEDI_TEST_KEY", "sk-test")
    config = SediConfig.model_validate({"teacher": {"provider": "openai", "api_key_env": "SEDI_TEST_KEY", **teacher}})
    if error is None:
        openai_endpoints(config.teacher, "c.yaml")
    else:
        with pytest.raises(ConfigError, match=error):
            openai_endpoints(config.teacher, "c.yaml")


def test_a_missing_key_names_the_url_it_was_for_resolved_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEDI_TEST_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example.invalid/v1")
    config = SediConfig.model_validate({"teacher": {"provider": "openai", "api_key_env": "SEDI_TEST_KEY"}})
    with pytest.raises(ConfigError, match=r"\$SEDI_TEST_KEY is not set for the teacher at https://gateway\.example"):
        openai_endpoints(config.teacher, "c.yaml")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("teacher.timeout_s=.inf", "teacher.timeout_s"),
        ("teacher.backoff_base_s=.inf", "teacher.backoff_base_s"),
        ("teacher.backoff_max_s=.nan", "teacher.backoff_max_s"),
        ("teacher.timeout_s=1e9", "teacher.timeout_s"),
        ("budget.max_cost_usd=.nan", "budget.max_cost_usd"),
        ("teacher.api_key_env=sk-proj-SECRETSECRET", "teacher"),
        ("teacher.api_key_env=MY KEY", "teacher"),
    ],
)
def test_unbounded_waits_and_pasted_keys_are_rejected(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=f"field '{field}'") as err:
        load_config(None, [override, "teacher.prices.prompt=1"])
    assert "SECRET" not in str(err.value)


def test_seed_files_with_a_byte_order_mark_load(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"instruction": "Say hello.", "input": "", "output": "Hello."}\n', encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    (task,) = load_tasks(path)
    assert task.instruction == "Say hello."


def test_a_pool_of_servers_is_checked_server_by_server_and_excludes_base_url_local_and_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEDI_TEST_KEY", "sk-test")
    pool = ["http://127.0.0.1:8001/v1", "https://gpu-2.example.invalid/v1"]
    teacher = {"provider": "openai", "api_key_env": "SEDI_TEST_KEY", "base_urls": pool}
    with pytest.raises(ConfigError, match=r"'teacher.prices' is not set for the teacher at https://gpu-2"):
        openai_endpoints(SediConfig.model_validate({"teacher": teacher}).teacher, "c.yaml")
    bad = {**teacher, "free": True, "base_urls": [pool[0], "gpu-2:8000"]}
    with pytest.raises(ConfigError, match=r"field 'teacher.base_urls\[1\]' is 'gpu-2:8000'"):
        openai_endpoints(SediConfig.model_validate({"teacher": bad}).teacher, "c.yaml")
    found = openai_endpoints(SediConfig.model_validate({"teacher": {**teacher, "free": True}}).teacher, "c.yaml")
    assert [e.base_url for e in found] == pool and all(e.api_key == "sk-test" for e in found)
    for extra, words in [
        ({"base_url": pool[0]}, "both set"),
        ({"provider": "local"}, "provider 'openai'"),
        ({"batch_api": True}, "one provider endpoint"),
    ]:
        with pytest.raises(ValueError, match=words):
            SediConfig.model_validate({"teacher": {**teacher, **extra}})


@pytest.mark.parametrize(
    ("before", "after", "refused"),
    [
        ({"base_url": "http://127.0.0.1:8001/v1"}, {"base_urls": ["http://127.0.0.1:8001/v1", "http://h2/v1"]}, False),
        ({"base_urls": ["http://a/v1", "http://b/v1"]}, {"base_urls": ["http://b/v1/", "http://c/v1"]}, False),
        ({"base_urls": ["http://a/v1", "http://b/v1"]}, {"base_urls": ["http://c/v1"]}, True),
        ({"base_url": "http://a/v1"}, {"base_url": "http://c/v1"}, True),
    ],
)
def test_a_resume_may_change_the_servers_only_while_keeping_one_it_used(
    before: dict[str, Any], after: dict[str, Any], refused: bool
) -> None:
    def config(urls: dict[str, Any]) -> SediConfig:
        return SediConfig.model_validate({"teacher": {"provider": "openai", "free": True, **urls}})

    changes = changed_settings(config(before).model_dump(mode="json"), config(after))
    assert bool(changes) == refused, changes
