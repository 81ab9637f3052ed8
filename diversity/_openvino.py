"""The encoder's OpenVINO backend: the same sentence-transformers model, compiled by OpenVINO for the CPU.

Why: embedding is the filter's whole cost on CPU. Measured on 2,000 real T0 prompts against float32 torch (CPU
milliseconds per text, 2 threads, an AVX512-BF16/AMX machine shared with other jobs): torch float32 39.4,
OpenVINO float32 22.6, OpenVINO bf16 9.5, with identical filter decisions at cosine 0.95 (min cosine 0.99996 to
float32 torch). The figures on an idle machine come from ``scripts/bench_filter.py`` (``backend`` and
``backend_agreement`` in its JSON line).

The model is converted from the loaded torch modules (``openvino.convert_model`` traces them; no ONNX file and no
``optimum``, whose ONNX package pins an older transformers). Converting takes about 8 s and reading a saved
conversion 0.5 s (measured on this 2-core machine under load), so with ``cache`` the converted model is kept on
disk under a key of the model's files, the OpenVINO version and the recipe below. Only the pipeline the filter's
default uses is converted: a transformer, mean pooling, and optionally L2 normalisation; any other pipeline stays
on torch (see :func:`unsupported_reason`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OpenVinoRunner", "openvino_available", "unsupported_files_reason", "unsupported_reason"]

# Bump when _wrapper or the conversion changes, so that conversions saved by an older recipe are not reused.
_RECIPE = 1


def openvino_available() -> bool:
    """Whether openvino is installed, without importing it (the pre-flight checks must stay cheap)."""
    return importlib.util.find_spec("openvino") is not None


def _reason(names: list[str], pooling: str | None) -> str | None:
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"its pipeline is {names}, not Transformer + Pooling (+ Normalize)"
    if pooling != "mean":
        return f"it pools by {pooling!r}, not by the mean"
    return None


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` (a SentenceTransformer) cannot run here, or ``None`` when it can."""
    names = [type(module).__name__ for module in model]
    return _reason(names, getattr(model[1], "pooling_mode", None) if len(names) > 1 else None)


def unsupported_files_reason(folder: Path) -> str | None:
    """:func:`unsupported_reason` read from a sentence-transformers folder's files, without loading the model, so
    that a run can refuse a config before it spends anything. ``None`` also when the folder is not one (no
    readable ``modules.json``): the model is then checked when it is loaded."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        names = [str(module["type"]).rsplit(".", 1)[-1] for module in modules]
        pooling = None
        if len(modules) > 1:
            flags = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
            if "pooling_mode" in flags:  # newer sentence-transformers write the mode by name
                pooling = str(flags["pooling_mode"])
            else:  # older ones one boolean per mode: mean alone is "mean_tokens"
                on = sorted(key for key, value in flags.items() if key.startswith("pooling_mode_") and value)
                pooling = "mean" if on == ["pooling_mode_mean_tokens"] else "+".join(on) or "none"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _reason(names, pooling)


def _wrapper(model: Any, inputs: list[str]) -> Any:
    """A torch module taking the tokenizer's tensors in ``inputs`` order and returning unit-length mean-pooled
    vectors, which is what the pipeline computes with ``normalize_embeddings=True``."""
    import torch

    transformer = model[0].auto_model.eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            named = dict(zip(inputs, tensors, strict=True))
            hidden = self.transformer(**named).last_hidden_state
            mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return Pooled().eval()


class OpenVinoRunner:
    """Encodes like ``model.encode(texts, normalize_embeddings=True)``, on OpenVINO's CPU plugin.

    ``bf16``: run in bf16 (only worth it on CPUs with native bf16; the caller decides). ``threads``: OpenVINO's
    inference threads (``None``: its default, one per core). ``cache``: a folder for saved conversions, keyed by
    ``identity`` (what names the model's weights) and the files of ``folder``, the model's local folder if any.
    """

    def __init__(
        self,
        model: Any,
        bf16: bool,
        threads: int | None = None,
        cache: Path | None = None,
        identity: str = "",
        folder: Path | None = None,
    ) -> None:
        import openvino as ov

        self._model = model
        example = self._tokenize(["an example sentence", "a second, longer example sentence"])
        self._inputs = list(example)
        saved = None if cache is None else cache / _key(model, identity, folder, self._inputs) / "model.xml"
        converted = None
        if saved is not None and saved.exists():
            try:
                converted = ov.Core().read_model(str(saved))
            except RuntimeError:  # a damaged file (say, a full disk at save time): convert again, in memory
                converted = self._convert(example)
        if converted is None:
            converted = self._convert(example)
            if saved is not None:
                _save(converted, saved)
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(converted, "CPU", config)

    def _convert(self, example: dict[str, Any]) -> Any:
        import openvino as ov
        import torch

        # Tracing asks hasattr() of every attribute of every module, and transformers' loss_function property
        # then logs "`loss_type=None` was set in the config but it is unrecognized" for an encoder that never
        # computes a loss: the one stray line in `sedi run`'s output (seen 2026-12-08). Quiet only while tracing.
        modeling_log = logging.getLogger("transformers.modeling_utils")
        level = modeling_log.level
        modeling_log.setLevel(logging.ERROR)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # Tracing warns about Python-level branches on shapes; the converted graph keeps both lengths
                # dynamic, and tests compare its vectors with torch's on texts of many lengths.
                warnings.simplefilter("ignore")
                model = _wrapper(self._model, self._inputs)
                converted = ov.convert_model(model, example_input=tuple(example.values()))
        finally:
            modeling_log.setLevel(level)
        for port, name in zip(converted.inputs, self._inputs, strict=True):
            port.get_tensor().set_names({name})
        return converted

    def _tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        features = self._model.preprocess(list(texts))
        return {k: v for k, v in features.items() if hasattr(v, "shape")}

    def encode(self, texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]:
        output = self._compiled.outputs[0]
        out = np.zeros((len(texts), output.get_partial_shape()[1].get_length()), np.float32)
        request = self._compiled.create_infer_request()  # one per call: callers on several threads stay apart
        # Longest first, as sentence-transformers does, so each batch pads to a similar length.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            picked = order[start : start + batch_size]
            features = self._tokenize([texts[i] for i in picked])
            result = request.infer({name: features[name].numpy() for name in self._inputs})
            out[picked] = result[output]
        return out


def _key(model: Any, identity: str, folder: Path | None, inputs: list[str]) -> str:
    import openvino as ov

    parts = [identity, ov.__version__, str(_RECIPE), ",".join(inputs), str(model.max_seq_length)]
    if (
        folder is not None and folder.is_dir()
    ):  # a local model: its files' sizes and times, so an edited model is converted again
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                parts.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _save(converted: Any, target: Path) -> None:
    """Write the conversion to a temporary folder, then rename it into place: a reader never sees half a model,
    and of two processes converting at once the second simply keeps its own copy in memory."""
    import openvino as ov

    target.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent.parent, prefix=".partial-"))
    try:
        ov.save_model(converted, str(staging / target.name), compress_to_fp16=False)  # keep float32 weights
        os.replace(staging, target.parent)
    except OSError:
        pass  # already saved by another process, or an unwritable cache: the conversion in memory is used
    finally:
        shutil.rmtree(staging, ignore_errors=True)
