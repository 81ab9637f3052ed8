"""Small file and text helpers shared by the run directory's writers: canonical JSON and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace; used for hashing and storing requests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fsync_write(path: Path, text: str) -> None:
    """Write a small file atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
