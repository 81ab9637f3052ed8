"""Where the teacher lives: an OpenAI-compatible URL and key, or the embedded local server.

With ``teacher.provider: local`` the server is started lazily (only when a request misses the cache)
on a free loopback port, as a child process that watches its parent and exits with it, logging to
``RUN_DIR/logs/teacher.log``; it is stopped when the run ends.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx2

from sedi.base.hardware import offline_env
from sedi.base.redact import redact, register, split_userinfo
from sedi.config.teacher import TeacherConfig
from sedi.exceptions import ConfigError, TeacherError
from sedi.teacher.endpoint_pool import Endpoint

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Sent to servers that need no key (loopback, the embedded server): the openai client insists on one.
_PLACEHOLDER_KEY = "sedi-no-key"


def _is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine by address: an IP in 127.0.0.0/8, ::1 (an IPv4-mapped
    ``::ffff:127.x.y.z`` included), or the literal ``localhost``. A name is never trusted for what it spells
    (``127.attacker.example`` is anybody's) nor for what it resolves to now (it may resolve elsewhere later)."""
    try:
        host = urlparse(url).hostname or ""
    except ValueError:  # an unparseable netloc ("http://[::1/v1"): not loopback, the caller's checks refuse it
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone id ("::1%lo") names no other host
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def openai_endpoints(config: TeacherConfig, source: str) -> list[Endpoint]:
    """Base URL and key of each server of ``provider: openai``: ``teacher.base_urls``, else the one of
    :func:`openai_endpoint`. Each is checked as that checks one."""
    if config.base_urls is None:
        return [openai_endpoint(config, source)]
    return [openai_endpoint(config, source, url, f"teacher.base_urls[{i}]") for i, url in enumerate(config.base_urls)]


def openai_endpoint(
    config: TeacherConfig, source: str, url: str | None = None, field: str = "teacher.base_url"
) -> Endpoint:
    """Base URL and key for ``provider: openai`` (``url``, else ``teacher.base_url``, else $OPENAI_BASE_URL, else
    OpenAI's). A missing key, or missing prices (unless ``teacher.free``), is a :class:`ConfigError` unless the URL
    is loopback; the key's value never appears in a message.

    User-info in the URL (``http://user:pass@host/v1``) is split off: it is sent as HTTP Basic auth, as httpx
    would send it (replacing the Bearer key: one Authorization header), and the URL sedi keeps, stores and prints
    has none. The key and the user-info are registered with :mod:`sedi.base.redact` here, when they are read."""
    given = url or config.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    try:
        base_url, basic_auth = split_userinfo(given)
        scheme = urlparse(base_url).scheme
    except ValueError:  # an unparseable URL ("http://[::1/v1"): named as given, less any credential
        base_url, basic_auth, scheme = redact(given), None, ""
    if scheme not in {"http", "https"}:
        raise ConfigError(f"{source}: field '{field}' is {base_url!r}: give an http(s) URL ending in /v1")
    key = os.environ.get(config.api_key_env, "")
    register(key)
    if not key:
        if not _is_loopback(base_url):
            raise ConfigError(
                f"{source}: field 'teacher.api_key_env': environment variable ${config.api_key_env} is not set "
                f"for the teacher at {base_url}: export your API key in it, or set teacher.api_key_env to the "
                "variable that holds it (or point teacher.base_url / $OPENAI_BASE_URL at another server)"
            )
        key = _PLACEHOLDER_KEY
    if config.prices is None and not config.free and not _is_loopback(base_url):
        # Without prices every cost would read $0 and budget.max_cost_usd could never fire: refuse before
        # the first (paid) request rather than report a wrong cost afterwards.
        raise ConfigError(
            f"{source}: field 'teacher.prices' is not set for the teacher at {base_url}: set "
            "teacher.prices.prompt and teacher.prices.completion (USD per million tokens), or teacher.free: true "
            "if it costs nothing"
        )
    return Endpoint(base_url.rstrip("/"), key, basic_auth)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalTeacher:
    """The embedded teacher server as a child process of the run (or, see :mod:`experiment.parallel`, of a set of runs
    sharing it: ``max_batch`` is then the sum of their ``teacher.concurrency``, default this config's)."""

    def __init__(self, config: TeacherConfig, log_dir: Path, max_batch: int | None = None) -> None:
        self.config = config
        self.log_path = log_dir / "teacher.log"
        self.max_batch = config.concurrency if max_batch is None else max_batch
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint: Endpoint | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Endpoint:
        return self.start()

    def start(self) -> Endpoint:
        with self._lock:
            if self.endpoint is None:
                self.endpoint = self._start()
            return self.endpoint

    def _start(self) -> Endpoint:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [
            sys.executable, "-m", "sedi", "serve-teacher",
            "--model", self.config.local.model,
            "--model-id", self.config.model,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--device", self.config.local.device,
            "--dtype", self.config.local.precision,
            "--parent-pid", str(os.getpid()),
            # decode every request the client keeps in flight together; larger batches gave more tokens/s on
            # CPU (measured in docs/results.md, "The embedded teacher's decoding speed")
            "--max-batch", str(self.max_batch),
        ]  # fmt: skip
        env = offline_env(os.environ)
        env.pop(self.config.api_key_env, None)  # the local server never needs the user's key
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C at the terminal reaches the run, not the server, which must stay up to
            # answer the requests in flight (sedi.teacher.interrupt); stop() ends it, and it exits by itself
            # once its parent is gone (--parent-pid).
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        base_url = f"http://127.0.0.1:{port}/v1"
        self._wait_ready(base_url)
        return Endpoint(base_url, _PLACEHOLDER_KEY)

    def _wait_ready(self, base_url: str) -> None:
        deadline = time.monotonic() + self.config.local.startup_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TeacherError(
                    f"the local teacher server exited with code {self.process.returncode} while starting: "
                    f"see {self.log_path} (check teacher.local.model)"
                )
            try:
                if httpx2.get(f"{base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.5)
        self._stop()
        raise TeacherError(
            f"the local teacher server did not answer within {self.config.local.startup_timeout_s:.0f} s: "
            f"see {self.log_path}, or raise teacher.local.startup_timeout_s"
        )

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.endpoint = None


def local_endpoint(base_url: str) -> Endpoint:
    """The endpoint of an embedded teacher server already running at ``base_url`` (it needs no key)."""
    return Endpoint(base_url, _PLACEHOLDER_KEY)
