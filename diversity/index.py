"""Nearest neighbours by inner product (cosine on normalised vectors) over FAISS, with caller-chosen ids.

Three kinds, chosen by pool size:

- ``"exact"`` (``IndexFlatIP``): every query scans every vector. Exact, no training, and on CPU a
  scan of 100K 384-d vectors takes a few milliseconds per query, which is fine for pools well into the
  hundreds of thousands. The default, because a near-duplicate filter should not miss neighbours.
- ``"hnsw"`` (``IndexHNSWFlat``): a navigable graph; queries cost roughly log(n) instead of n, at the
  price of ~``2·m`` extra links per vector, slower inserts and approximate answers (a true neighbour can
  be missed, so a few near-duplicates slip through). Worth it beyond about a million vectors.
- ``"ivf"`` (``IndexIVFFlat``): vectors are bucketed by k-means centroids and a query scans only
  ``nprobe`` buckets; cheaper to build than HNSW, but needs training data. It keeps an exact flat index
  until ``min_train`` vectors exist, then trains on them and switches, so small pools stay exact.

FAISS numbers vectors 0..n-1 in insertion order; the caller's ids live in a parallel array, which is
simpler than ``IndexIDMap`` and works the same way for all three kinds. ``faiss`` is imported lazily.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["IndexKind", "VectorIndex"]

IndexKind = Literal["exact", "hnsw", "ivf"]
_KINDS = ("exact", "hnsw", "ivf")


def as_matrix(vectors: npt.ArrayLike, dim: int) -> npt.NDArray[np.float32]:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array (FAISS accepts nothing else)."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1 and matrix.size == 0:
        matrix = matrix.reshape(0, dim)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {matrix.shape}")
    return matrix


class VectorIndex:
    """A growing set of ``(id, vector)`` pairs searchable by inner product."""

    def __init__(
        self,
        dim: int,
        kind: IndexKind = "exact",
        *,
        hnsw_m: int = 32,  # links per node: FAISS's usual choice, good recall at 384-d
        ef_search: int = 128,  # candidates kept while searching; higher = better recall, slower queries
        nlist: int = 1024,  # IVF buckets; ~sqrt(n) to 4·sqrt(n) is the usual range for a million vectors
        nprobe: int = 32,  # buckets scanned per query: ~3% of nlist keeps recall high for duplicates
        min_train: int | None = None,
    ) -> None:
        """``min_train`` (IVF only): vectors needed before training; default ``39 * nlist``, the fewest
        points per centroid for which FAISS's k-means does not warn."""
        if dim < 1:
            raise ValueError("dim must be positive")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        self.dim = dim
        self.kind: IndexKind = kind
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.min_train = 39 * nlist if min_train is None else max(min_train, nlist)
        self._ids = np.zeros(0, dtype=np.int64)
        self._index: Any = self._empty_index()

    def _empty_index(self) -> Any:
        import faiss

        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
            return index
        return faiss.IndexFlatIP(self.dim)  # "ivf" starts exact and switches once trained

    @property
    def trained(self) -> bool:
        """False for an IVF index still answering exactly because it has fewer than ``min_train`` vectors."""
        return self.kind != "ivf" or not self._is_flat()

    def _is_flat(self) -> bool:
        import faiss

        return isinstance(self._index, faiss.IndexFlat)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> npt.NDArray[np.int64]:
        """Ids in insertion order (a copy)."""
        return self._ids.copy()

    def add(self, ids: Sequence[int] | npt.NDArray[np.integer], vectors: npt.ArrayLike) -> None:
        """Add vectors under the caller's ids (not checked for uniqueness: a repeated id is just two entries)."""
        matrix = as_matrix(vectors, self.dim)
        id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(id_array) != len(matrix):
            raise ValueError(f"{len(id_array)} ids for {len(matrix)} vectors")
        if not len(matrix):
            return
        self._index.add(matrix)
        self._ids = np.concatenate([self._ids, id_array])
        if self.kind == "ivf" and self._is_flat() and len(self._ids) >= self.min_train:
            self._train_ivf()

    def _train_ivf(self) -> None:
        import faiss

        stored = self._index.reconstruct_n(0, self._index.ntotal)
        ivf: Any = faiss.index_factory(self.dim, f"IVF{self.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.train(stored)
        ivf.add(stored)  # same order as before, so positions still map to self._ids
        faiss.extract_index_ivf(ivf).nprobe = self.nprobe
        self._index = ivf

    def search(self, vectors: npt.ArrayLike, k: int = 1) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Per query, the ``k`` best ids and similarities, best first; ``-1`` / ``-inf`` where fewer exist."""
        if k < 1:
            raise ValueError("k must be positive")
        queries = as_matrix(vectors, self.dim)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if not len(queries) or not len(self._ids):
            return ids, sims
        found_sims, positions = self._index.search(queries, min(k, len(self._ids)))
        width = positions.shape[1]
        valid = positions >= 0
        ids[:, :width] = np.where(valid, self._ids[np.where(valid, positions, 0)], -1)
        sims[:, :width] = np.where(valid, found_sims, -np.inf)
        return ids, sims

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write index, ids and settings to one ``.npz`` file, atomically (temporary file, then ``os.replace``)."""
        import faiss

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "dim": self.dim,
            "kind": self.kind,
            "hnsw_m": self.hnsw_m,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "min_train": self.min_train,
        }
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(
                    out,
                    index=faiss.serialize_index(self._index),
                    ids=self._ids,
                    settings=np.array(json.dumps(settings)),
                )
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VectorIndex:
        """An index equal to the one :meth:`save` wrote (same ids, same search results)."""
        import faiss

        with np.load(Path(path), allow_pickle=False) as data:
            settings = json.loads(str(data["settings"]))
            loaded = cls(
                settings["dim"],
                settings["kind"],
                hnsw_m=settings["hnsw_m"],
                ef_search=settings["ef_search"],
                nlist=settings["nlist"],
                nprobe=settings["nprobe"],
                min_train=settings["min_train"],
            )
            loaded._index = faiss.deserialize_index(np.array(data["index"], dtype=np.uint8))
            loaded._ids = np.array(data["ids"], dtype=np.int64)
        if loaded.kind == "hnsw":
            loaded._index.hnsw.efSearch = loaded.ef_search  # search-time setting, not serialised
        elif not loaded._is_flat():
            faiss.extract_index_ivf(loaded._index).nprobe = loaded.nprobe
        if loaded._index.ntotal != len(loaded._ids):
            raise ValueError(f"{path}: {loaded._index.ntotal} vectors but {len(loaded._ids)} ids")
        return loaded
