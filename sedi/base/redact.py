"""The one redaction step: what sedi writes or prints never holds a credential.

Three kinds of secret are replaced by :data:`MARK`:

- the values registered with :func:`register` when a credential is read (the key in ``teacher.api_key_env``,
  each endpoint's, and the user-info of a URL with its Basic-auth header value; and, when the CLI starts, the
  environment's ``*_KEY``, ``*_TOKEN``, ``*_SECRET`` and ``*_PASSWORD`` values), found wherever they are,
  whatever surrounds them: a provider may echo them in any error body, header dump or completion;
- any ``Authorization`` header value, ``Bearer ...`` or ``Basic ...`` token, known or not;
- URL user-info (``scheme://user:pass@host`` becomes ``scheme://***@host``).

The write points call :func:`redact`: the console and every error (``sedi.cli.app.main`` guards stdout and stderr
with :func:`guarded_streams`), the ledger's error column (:mod:`sedi.store.ledger`), teacher errors at their source
(:mod:`sedi.teacher.outcomes`), the config dump (``config.yaml``), the report, and the dataset card (which the
Hub push sends as written). Completion text goes through :func:`redact_known` only: a teacher writing about
``Bearer`` tokens or ``user:pass@`` URLs in a task is data, not a leak, but the run's own key is never kept.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MARK = "***"
# Shorter values are not registered: replacing every "ab" in a text would garble it, and no real key or
# password worth hiding is that short.
MIN_SECRET = 6

_lock = threading.Lock()
_known: set[str] = set()

_AUTH_HEADER = re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+")
# A scheme word followed by something shaped like a credential (8+ characters with a digit, a symbol or an inner
# capital), so that prose ("a basic example", "the bearer of") is left alone.
_SCHEME_TOKEN = re.compile(r"\b([Bb]earer|BEARER|Basic|BASIC)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_TOKENISH = re.compile(r"[0-9._~+/=-]|.[A-Z]")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")


def register(secret: str | None) -> None:
    """Remember a credential so that :func:`redact` blanks it wherever it appears (with its URL-quoted form)."""
    if not secret or len(secret) < MIN_SECRET:
        return
    with _lock:
        _known.update(s for s in (secret, quote(secret, safe=""), unquote(secret)) if len(s) >= MIN_SECRET)


# Environment variables whose values are taken for credentials when the CLI starts (register_environment), so that
# even a command that never reads the teacher config (status, report, export) blanks them.
_SECRET_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN", "_SECRET", "_PASSWORD")


def register_environment() -> None:
    """Register the values of the environment's credential-like variables (``*_API_KEY``, ``*_TOKEN``, ...)."""
    for name, value in os.environ.items():
        if name.upper().endswith(_SECRET_SUFFIXES):
            register(value)


def redact_known(text: str) -> str:
    """``text`` with every registered credential replaced by :data:`MARK` (longest first, so that a key
    that contains another is blanked whole)."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MARK)
    return text


def redact(text: str) -> str:
    """``text`` with registered credentials, Authorization header values and URL user-info replaced."""
    text = redact_known(text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MARK, text)
    text = _SCHEME_TOKEN.sub(
        lambda m: m.group(1) + m.group(2) + MARK if _TOKENISH.search(m.group(3)) else m.group(0), text
    )
    return _USERINFO.sub(lambda m: m.group(1) + MARK + "@", text)


def split_userinfo(url: str) -> tuple[str, str | None]:
    """(``url`` without user-info, the ``Authorization: Basic`` value its user-info stands for, or None).

    Both parts of the user-info are registered: the URL keeps them nowhere once split."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    register(password)
    register(f"{user}:{password}")
    register(userinfo)
    register(header.split(" ", 1)[1])
    return urlunsplit(parts._replace(netloc=host)), header


def strip_userinfo(url: str) -> str:
    """``url`` without its user-info (registered on the way)."""
    return split_userinfo(url)[0]


class _RedactingStream:
    """A text stream that redacts everything written through it; the rest is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_streams() -> Iterator[None]:
    """Redact every line written to stdout and stderr while the block runs (rich, typer, print, tracebacks); the
    environment's credentials are registered first."""
    register_environment()
    saved = sys.stdout, sys.stderr
    sys.stdout = _RedactingStream(saved[0])
    sys.stderr = _RedactingStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
