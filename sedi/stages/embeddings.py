"""The run's sentence encoder, created on first use (loading it costs seconds, and a resumed run whose
filter and metrics are answered from the embedding cache may still need it for the cache key)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diversity.embeddings import Backend, Precision


class LazyEncoder:
    """Callable ``texts -> (n, dim) float32``; a :class:`diversity.Encoder` with an on-disk cache."""

    def __init__(
        self, model: str | None, cache_path: Path, precision: Precision = "auto", backend: Backend = "auto"
    ) -> None:
        self.model = model
        self.cache_path = cache_path
        self.precision: Precision = precision
        self.backend: Backend = backend
        self._encoder: Any = None

    def __call__(self, texts: Sequence[str]) -> Any:
        if self._encoder is None:
            from diversity import Encoder
            from sedi.serve import cache_dir

            self._encoder = Encoder(
                self.model,
                cache_path=self.cache_path,
                precision=self.precision,
                backend=self.backend,
                compiled_cache=cache_dir() / "openvino",  # one conversion per model for all runs (8 s saved)
            )
        return self._encoder.encode(texts)

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
