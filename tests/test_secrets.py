"""No credential is written anywhere: a provider that echoes the key and the URL's password back in its 401 and 500
bodies, in its response headers and inside a completion, through a real run, report, export and Hub push; then every
byte written (the run directories with sedi.db, the export, the pushed files, the library's home, stdout and stderr
of every command) is searched for the canaries.

How a URL's user-info is handled (teacher.endpoint.openai_endpoint): split off and sent as HTTP Basic auth, as httpx
would send it; sedi stores and prints the URL without it. Also here: loopback is judged by address, not spelling.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from sedi.base import redact
from sedi.config.model import SediConfig
from sedi.exceptions import ConfigError, TeacherError
from sedi.store.db import RunStore
from sedi.teacher.budget import Budget
from sedi.teacher.client import Endpoint, TeacherClient, TeacherRequest
from sedi.teacher.endpoint import _is_loopback, openai_endpoint
from tests.fault_server import EchoFirst, FaultServer
from tests.helpers import SMALL_PRICED_ROUND, scripted_args, sedi, set_args, status
from tests.hub_server import local_hub
from tests.scripted_teacher import ScriptedEngine
from tests.servers import serve_app

KEY_ENV = "SEDI_CANARY_KEY"
CANARY_KEY = "sk-CANARYKEY-7f3a9c1e5b"
CANARY_PASS = "CANARYPASS"
BASIC = base64.b64encode(f"user:{CANARY_PASS}".encode()).decode()  # what the wire carries for the URL's user-info
CANARIES = (CANARY_KEY, CANARY_PASS, BASIC)
HUB_TOKEN = "hf_localTestToken0123456789"


def _hits(data: bytes) -> list[str]:
    return [c for c in CANARIES if c.encode() in data]


def _with_userinfo(base_url: str) -> str:
    return base_url.replace("http://", f"http://user:{CANARY_PASS}@", 1)


@pytest.mark.slow
def test_echoed_secrets_are_written_nowhere(tmp_path: Path, tiny_model_dir: Path) -> None:
    from sedi.serve import create_app

    run, run_401, out = tmp_path / "run", tmp_path / "run-401", tmp_path / "export" / "train.jsonl"
    hf_home = tmp_path / "hf-home"
    env = {KEY_ENV: CANARY_KEY, "HF_HOME": str(hf_home)}
    sets = set_args({**SMALL_PRICED_ROUND, "teacher.api_key_env": KEY_ENV, "teacher.backoff_base_s": "0"})
    outputs: list[str] = []
    # Two 500s and a 200 whose completion is the echo, then the scripted teacher: the run retries and finishes.
    app = EchoFirst(create_app(ScriptedEngine()), plan=["echo_500", "echo_500", "echo_text"], echo=(CANARY_KEY,))
    with serve_app(app) as served:
        url = _with_userinfo(served.base_url)
        args = [a.replace(served.base_url, url) for a in scripted_args(run, served, tiny_model_dir, *sets)]
        done = sedi(*args, env=env)
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
        shown = sedi("config", "show", "--set", f"teacher.base_url={url}", env=env)
        outputs += [shown.stdout, shown.stderr]
        assert shown.returncode == 0 and "http://***@127.0.0.1" in shown.stdout
    assert app.answered == {"echo_500": 2, "echo_text": 1}
    summary = status(run)
    assert summary["kept"] > 0
    errors = [r for r in _ledger_errors(run) if r]
    assert len(errors) == 2 and all(redact.MARK in e for e in errors)  # the echoes were recorded, blanked
    assert CANARY_PASS not in (run / "config.yaml").read_text() and "127.0.0.1" in (run / "config.yaml").read_text()

    # A 500 then a 401 echoing the Bearer key (no user-info: the key is what is sent): exit 2, one error line.
    app_401 = EchoFirst(create_app(ScriptedEngine()), plan=["echo_500", "echo_401"], echo=(CANARY_KEY,))
    with serve_app(app_401) as served:
        refused = sedi(*scripted_args(run_401, served, tiny_model_dir, *sets), env=env)
    outputs += [refused.stdout, refused.stderr]
    assert refused.returncode == 2 and refused.stderr.splitlines()[-1].startswith("error: "), refused.stderr
    assert refused.stderr.count("error: ") == 1
    assert "rejected the API key" in refused.stderr and f"${KEY_ENV}" in refused.stderr
    assert len(_ledger_errors(run_401)) == 2

    reported = sedi("report", str(run), "--out", str(tmp_path / "report"))
    outputs += [reported.stdout, reported.stderr]
    assert reported.returncode == 0, reported.stderr
    with local_hub() as hub:
        hub_env = {**env, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": HUB_TOKEN, "HF_HUB_OFFLINE": "0"}
        pushed = sedi("export", str(run), "--format", "messages", "--out", str(out), "--push-to-hub", "me/data",
                      env=hub_env)  # fmt: skip
        outputs += [pushed.stdout, pushed.stderr]
        assert pushed.returncode == 0, pushed.stderr
    pushed_files = hub.files["datasets/me/data"]
    assert set(pushed_files) == {"train.jsonl", "README.md"}
    assert "127.0.0.1" in pushed_files["README.md"].decode()  # the card carries the config, URL without user-info

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "sedi.db" for p in written) and out.is_file()
    leaks = {str(p): _hits(p.read_bytes()) for p in written}
    leaks.update({f"hub:{name}": _hits(data) for name, data in pushed_files.items()})
    leaks.update({f"hub:commit{i}": _hits(repr(c).encode()) for i, c in enumerate(hub.commits)})
    leaks.update({f"output {i}": _hits(text.encode()) for i, text in enumerate(outputs)})
    assert {where: found for where, found in leaks.items() if found} == {}


def _ledger_errors(run: Path) -> list[str]:
    from tests.helpers import rows

    return [r[0] for r in rows(run, "SELECT error FROM calls WHERE error IS NOT NULL ORDER BY id")]


ECHOED_KEY = "sk-echoed-0123456789"


@pytest.mark.parametrize("fault", ["echo_401", "echo_500", "echo_text"])
def test_a_key_echoed_by_the_provider_is_neither_recorded_nor_raised(tmp_path: Path, fault: str) -> None:
    app = FaultServer(default=fault, echo=(ECHOED_KEY, "https://u:pw-123456@up.example/v1"))
    store = RunStore(tmp_path / "run")
    with serve_app(app) as served:
        teacher = {"provider": "openai", "base_url": served.base_url, "max_retries": 1, "backoff_base_s": 0}
        config = SediConfig.model_validate({"teacher": teacher})
        client = TeacherClient(
            config.teacher, store, Budget(config.budget, store.spent()), lambda: Endpoint(served.base_url, ECHOED_KEY)
        )

        async def ask() -> str:
            try:
                return (await client.complete(TeacherRequest(prompt="Task 1: x\nTask 2:", max_tokens=64))).text
            finally:
                await client.aclose()

        if fault == "echo_text":
            texts = [asyncio.run(ask())]
            assert f"Bearer {redact.MARK}" in texts[0] and "upstream failed for key" in texts[0]
            texts += [r[0] for r in store.db.execute("SELECT text FROM responses")]
        else:
            with pytest.raises(TeacherError) as raised:
                asyncio.run(ask())
            texts = [str(raised.value)]
    rows = store.ledger()
    assert len(rows) == app.requests == {"echo_401": 1, "echo_500": 2, "echo_text": 1}[fault]
    texts += [r["error"] for r in rows if r["error"]]
    assert fault == "echo_text" or all("authorization: " in r["error"] for r in rows)  # the echo was recorded
    for text in texts:
        assert ECHOED_KEY not in text, text
        # user-info sedi was never given is blanked in messages; completion text loses only the values sedi knows
        assert fault == "echo_text" or "pw-123456" not in text, text
    store.close()


def test_the_redactor_blanks_keys_headers_and_user_info() -> None:
    redact.register("sk-registered-123456")
    text = (
        "key sk-registered-123456, quoted sk%2Dregistered-123456; Authorization: Bearer sk-other-unknown-999; "
        '{"authorization": "Basic dXNlcjpwYXNz"} token Bearer abc.def-123456 at https://bob:hunter2@host.example/v1'
    )
    clean = redact.redact(text)
    for secret in ("sk-registered-123456", "sk-other-unknown-999", "dXNlcjpwYXNz", "abc.def-123456", "hunter2"):
        assert secret not in clean, secret
    assert "https://***@host.example/v1" in clean
    # prose with the scheme words is left alone, and completion text loses only registered values
    assert redact.redact("a basic example; the bearer of news") == "a basic example; the bearer of news"
    assert (
        redact.redact_known("Bearer tokenish-12345678 and sk-registered-123456")
        == f"Bearer tokenish-12345678 and {redact.MARK}"
    )


def test_user_info_is_split_off_the_url_and_sent_as_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, CANARY_KEY)
    config = SediConfig.model_validate(
        {"teacher": {"provider": "openai", "api_key_env": KEY_ENV, "base_url": "http://user:s3cret-pw@127.0.0.1:9/v1"}}
    )
    endpoint = openai_endpoint(config.teacher, "test.yaml")
    assert endpoint.base_url == "http://127.0.0.1:9/v1" and endpoint.api_key == CANARY_KEY
    assert endpoint.basic_auth == "Basic " + base64.b64encode(b"user:s3cret-pw").decode()
    assert redact.redact(f"echo {CANARY_KEY} s3cret-pw {endpoint.basic_auth}").count(redact.MARK) == 3


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.9.8.7/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://[::ffff:127.0.0.1]/v1", True),
        ("http://127.attacker.example/v1", False),
        ("http://127.0.0.1.nip.io/v1", False),
        ("http://localhost.attacker.example/v1", False),
        ("http://[::ffff:10.0.0.1]/v1", False),
        ("http://10.0.0.1/v1", False),
    ],
)
def test_loopback_is_an_address_not_a_spelling(url: str, loopback: bool) -> None:
    assert _is_loopback(url) is loopback
    config = SediConfig.model_validate({"teacher": {"provider": "openai", "api_key_env": "SEDI_UNSET_KEY_ENV"}})
    if loopback:
        assert openai_endpoint(config.teacher, "t.yaml", url).api_key  # no key, no prices: allowed on this machine
    else:
        with pytest.raises(ConfigError, match="SEDI_UNSET_KEY_ENV"):
            openai_endpoint(config.teacher, "t.yaml", url)


@pytest.mark.slow
def test_a_name_that_looks_like_loopback_needs_prices_one_line_no_request(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with serve_app(create_scripted()) as served:
        # The server is the HTTP proxy of the run: a request to that name, had one been sent, would reach it.
        proxy = served.base_url.removesuffix("/v1")
        env = {KEY_ENV: CANARY_KEY, "HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
        args = ["--set", "teacher.provider=openai", "--set", "teacher.base_url=http://127.attacker.example/v1",
                "--set", f"teacher.api_key_env={KEY_ENV}"]  # fmt: skip
        result = sedi("run", "--run-dir", str(run_dir), *args, env=env)
        assert sum(served.request_counts.values()) == 0  # the listening server got nothing
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "teacher.prices" in result.stderr and "127.attacker.example" in result.stderr
    assert not run_dir.exists() and CANARY_KEY not in result.stderr + result.stdout


def create_scripted() -> object:
    from sedi.serve import create_app

    return create_app(ScriptedEngine())


def test_the_config_digest_does_not_depend_on_a_url_password() -> None:
    from sedi.config.model import load_config

    first, second = (
        load_config(None, [f"teacher.base_url=http://user:{pw}@127.0.0.1:9/v1"]) for pw in ("pw-one1", "pw-two2")
    )
    assert first.digest() == second.digest() != load_config(None, ["teacher.base_url=http://127.0.0.2:9/v1"]).digest()
