"""Questions about the machine that sedi's own code asks (the served teacher's default dtype), the
environment every process that loads a model runs in (no model hub), and handing freed memory back to it.

``diversity`` and ``feedback`` never import ``sedi``, so each keeps its own copy of the bf16 check
(``diversity.embeddings.cpu_has_native_bf16``, ``feedback._hf.resolve_runtime``); sedi code imports it from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from collections.abc import Mapping

# Nothing in a run may try a model hub: every model comes from a package or a local directory.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def host_summary() -> dict[str, object]:
    """What a benchmark's figures depend on, for its JSON line: the same benchmark took about 2 h 45 min on a 2-core
    host with AVX512-BF16 and about 6 h on one with AVX2 only, where the embedded teacher computes in float32
    (docs/results.md), so figures from different kinds of host are never compared."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "cores": cores,
        "gpu": gpu,
    }


def go_offline() -> None:
    """Set the Hugging Face offline variables in this process unless the user set them (``sedi export --push``
    is the one command that may reach the Hub, and runs without this)."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)


def offline_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the offline variables forced on: for a child process that loads a model (the local teacher
    server), whatever this process was started with."""
    return {**env, **OFFLINE_ENV}


def release_memory() -> None:
    """Give the memory a student used back to the system. glibc keeps freed heap memory for reuse, so a run that has
    trained holds its peak long after: one training round of the bundled student (64 seed tasks, 8 per step) left
    the process at 7.8 GB after ``gc.collect()`` and 0.8 GB after ``malloc_trim`` (2-core CPU, 2026-12-06).
    Six runs of a comparison holding that on a 24 GiB machine ended in the kernel's out-of-memory killer."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # another C library (musl): nothing to trim with
            ctypes.CDLL("libc.so.6").malloc_trim(0)
