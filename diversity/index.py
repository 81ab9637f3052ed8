"""Nearest neighbours by inner product (cosine on normalised vectors) over FAISS, with caller-chosen ids.

Four kinds:

- ``"exact"`` (``IndexFlatIP``): every query scans every vector. Exact, no training.
- ``"ivf"`` (``IndexIVFFlat``): vectors are bucketed by k-means centroids and a query scans only
  ``nprobe`` buckets; needs training data. It keeps an exact flat index until ``min_train`` vectors exist,
  then trains on them and switches, so small pools stay exact.
- ``"auto"``: ``"ivf"`` whose switch waits until :data:`AUTO_EXACT_BELOW` vectors, the size past which
  exact search stops being cheap next to embedding (measured below). The default of ``filter.embedding_index``.
- ``"hnsw"`` (``IndexHNSWFlat``): a navigable graph; queries cost roughly log(n), at the price of ~``2·m``
  links per vector, slow inserts and answers that depend on insertion threads (see :meth:`VectorIndex.load`).

Why ``"auto"`` switches at 100K (``scripts/bench_index_kinds.py``: pools of vectors derived from 2,000 real
MiniLM vectors of T0 prompts, 1,000 fresh queries in batches of 20, IVF1024 probing 32 buckets; 2-core machine
shared with other jobs, so the wall times are inflated several-fold, but both kinds ran under the same load):

    pool      exact ms/query   ivf ms/query   decisions identical   recall@1
    10K             5.2            4.4              100%               100%
    50K            27.9            2.3              100%               100%
    100K           55.7            3.5              100%               100%
    300K          193.2           10.2              100%               100%

Exact search grows linearly with the pool; near 100K it costs about as much per candidate as the 10% share
of a 5 ms embedding that the filter may take on an unloaded machine (the stack notes' 0.25 ms per query at
50K), while IVF's cost stays nearly flat and agreed on every decision. Training IVF at the switch is paid
once (about 40 s for 100K vectors here).

FAISS numbers vectors 0..n-1 in insertion order; the caller's ids live in a parallel array, which is
simpler than ``IndexIDMap`` and works the same way for all kinds. ``faiss`` is imported lazily.

Saving (:meth:`VectorIndex.save`) appends to an index directory (:mod:`diversity.index_store`): after the
first save, each save writes only the vectors added since the previous one. :meth:`VectorIndex.load` also
reads the single ``.npz`` file that earlier versions wrote, so existing run directories keep working; the
next save to a directory migrates them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from diversity.index_store import IndexStore

__all__ = ["AUTO_EXACT_BELOW", "IndexKind", "VectorIndex"]

IndexKind = Literal["auto", "exact", "hnsw", "ivf"]
_KINDS = ("auto", "exact", "hnsw", "ivf")
AUTO_EXACT_BELOW = 100_000  # measured: see the module docstring


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
        nprobe: int = 32,  # buckets per query (~3% of nlist): decided as exact search on all of a 200K derived stream
        min_train: int | None = None,
    ) -> None:
        """``min_train`` (IVF only): vectors needed before training; default ``39 * nlist``, the fewest
        points per centroid for which FAISS's k-means does not warn (``"auto"``: at least
        :data:`AUTO_EXACT_BELOW`)."""
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
        default_train = max(39 * nlist, AUTO_EXACT_BELOW) if kind == "auto" else 39 * nlist
        self.min_train = default_train if min_train is None else max(min_train, nlist)
        self._ids = np.zeros(0, dtype=np.int64)
        self._index: Any = self._empty_index()
        # Where this index was last saved, how many rows that save committed, and the rows added since
        # (kept only while attached to a directory, so an index that is never saved holds no second copy).
        self._store: IndexStore | None = None
        self._store_state: dict[str, Any] | None = None
        self._unsaved: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []

    def _empty_index(self) -> Any:
        import faiss

        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
            return index
        return faiss.IndexFlatIP(self.dim)  # "ivf" and "auto" start exact and switch once trained

    @property
    def _bucketed(self) -> bool:
        return self.kind in ("ivf", "auto")

    @property
    def trained(self) -> bool:
        """False for an IVF (or auto) index still answering exactly because it has fewer than ``min_train``
        vectors."""
        return not self._bucketed or not self._is_flat()

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
        if self._store is not None:
            self._unsaved.append((id_array.copy(), matrix.copy()))
        if self._bucketed and self._is_flat() and len(self._ids) >= self.min_train:
            self._train_ivf()

    def _train_ivf(self, centroids: npt.NDArray[np.float32] | None = None) -> None:
        """Switch to IVF: train k-means on the stored vectors, or take ``centroids`` saved by an earlier train."""
        stored = self._index.reconstruct_n(0, self._index.ntotal)
        self._index = self._ivf(centroids if centroids is not None else self._kmeans(stored))
        self._index.add(stored)  # same order as before, so positions still map to self._ids

    def _kmeans(self, data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import faiss

        ivf: Any = faiss.index_factory(self.dim, f"IVF{self.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.train(data)
        quantizer = faiss.downcast_index(ivf.quantizer)
        return np.asarray(quantizer.reconstruct_n(0, quantizer.ntotal), dtype=np.float32)

    def _ivf(self, centroids: npt.NDArray[np.float32]) -> Any:
        """An empty IVF index over fixed centroids: the same centroids give the same buckets, hence the same
        search results, which is what makes a reloaded IVF index decide like the one that was saved."""
        import faiss

        quantizer = faiss.IndexFlatIP(self.dim)
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        ivf: Any = faiss.IndexIVFFlat(quantizer, self.dim, len(centroids), faiss.METRIC_INNER_PRODUCT)
        ivf.own_fields = True
        quantizer.this.disown()  # type: ignore[attr-defined]  # the IVF index now frees it
        ivf.is_trained = True
        ivf.nprobe = self.nprobe
        return ivf

    def centroids(self) -> npt.NDArray[np.float32] | None:
        """A trained IVF index's centroids (``None`` for other kinds or before training)."""
        import faiss

        if not self._bucketed or self._is_flat():
            return None
        quantizer = faiss.downcast_index(self._index.quantizer)
        return np.asarray(quantizer.reconstruct_n(0, quantizer.ntotal), dtype=np.float32)

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

    def _settings(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "kind": self.kind,
            "hnsw_m": self.hnsw_m,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "min_train": self.min_train,
        }

    def save(self, path: str | os.PathLike[str]) -> int:
        """Commit the index to the directory ``path``; returns the bytes written.

        When the last save (or load) of this index was to the same directory and nothing else has been
        committed there since, only the rows added since are appended (plus, once, an IVF index's
        centroids); otherwise every row is written into a new generation (the first save, a migrated
        ``.npz`` index, or a directory another index was saved to). Either way the state file is replaced
        atomically only after the data are on disk, so a crash leaves the previous save readable."""
        store = IndexStore(path)
        state = store.state()
        centroids = self.centroids()
        same = (
            self._store is not None
            and self._store_state is not None
            and state is not None
            and self._store.directory.resolve() == store.directory.resolve()
            and (state["generation"], state["count"]) == (self._store_state["generation"], self._store_state["count"])
            and state["settings"]["kind"] == self.kind
            and not (state.get("centroids") and centroids is None)
        )
        if same and state is not None:
            ids = np.concatenate([i for i, _ in self._unsaved]) if self._unsaved else self._ids[:0]
            vectors = (
                np.concatenate([v for _, v in self._unsaved]) if self._unsaved else np.zeros((0, self.dim), np.float32)
            )
            new_state = store.append(state, ids, vectors, self._settings(), centroids)
        else:
            new_state = store.rewrite(self._all_rows(), self._settings(), centroids)
        self._store, self._store_state, self._unsaved = store, new_state, []
        return store.bytes_written

    def _all_rows(self) -> Any:
        """Every (ids, vectors) chunk in insertion order, reconstructed from FAISS (IVF needs a direct map)."""
        import faiss

        if not self._is_flat() and self._bucketed:
            faiss.extract_index_ivf(self._index).make_direct_map()
        step = 65_536
        for start in range(0, len(self._ids), step):
            stop = min(start + step, len(self._ids))
            yield self._ids[start:stop], self._index.reconstruct_n(start, stop - start)

    @classmethod
    def load(cls, path: str | os.PathLike[str], kind: IndexKind | None = None) -> VectorIndex:
        """The index :meth:`save` committed to the directory ``path`` (rows past the committed count, left by a
        crash, are ignored), or the single ``.npz`` file older versions wrote.

        Exact and IVF indexes come back deciding exactly as the saved one did: the same vectors in the same
        order, and an IVF index over its saved centroids. An HNSW graph is rebuilt by inserting the saved
        vectors again; FAISS builds it with several threads, so the graph (not the vectors) can differ from
        the saved one and a borderline neighbour may be found in one and missed in the other, as between
        any two HNSW builds. ``kind``: rebuild the stored vectors as another kind instead (a run whose
        configured index kind changed); the rebuilt index trains fresh when it is bucketed."""
        source = Path(path)
        if source.is_file():
            loaded = cls._load_npz(source)
            return loaded if kind is None or kind == loaded.kind else loaded._as_kind(kind)
        store = IndexStore(source)
        state = store.state()
        if state is None:
            raise ValueError(f"{source}: no saved index")
        settings = dict(state["settings"])
        same_kind = kind is None or kind == settings["kind"]
        if not same_kind:
            settings["kind"], settings["min_train"] = kind, None
        loaded = cls._from_settings(settings)
        centroids = store.centroids(state) if same_kind else None
        if centroids is not None:
            loaded._index = loaded._ivf(centroids)
        ids = store.ids(state)
        start = 0
        for chunk in store.vector_chunks(state):
            loaded.add(ids[start : start + len(chunk)], chunk)  # an untrained bucketed index trains as it did
            start += len(chunk)
        if same_kind:  # attached: the next save appends
            loaded._store, loaded._store_state = store, state
        return loaded

    @classmethod
    def _from_settings(cls, settings: dict[str, Any]) -> VectorIndex:
        """An empty index with the settings a saved one recorded."""
        return cls(
            settings["dim"],
            settings["kind"],
            hnsw_m=settings["hnsw_m"],
            ef_search=settings["ef_search"],
            nlist=settings["nlist"],
            nprobe=settings["nprobe"],
            min_train=settings["min_train"],
        )

    def _as_kind(self, kind: IndexKind) -> VectorIndex:
        other = VectorIndex(
            self.dim, kind, hnsw_m=self.hnsw_m, ef_search=self.ef_search, nlist=self.nlist, nprobe=self.nprobe
        )
        for ids, vectors in self._all_rows():
            other.add(ids, vectors)
        return other

    @classmethod
    def _load_npz(cls, path: Path) -> VectorIndex:
        """Format 1: one ``.npz`` with the serialised FAISS index, the ids and the settings."""
        import faiss

        with np.load(path, allow_pickle=False) as data:
            settings = json.loads(str(data["settings"]))
            loaded = cls._from_settings(settings)
            loaded._index = faiss.deserialize_index(np.array(data["index"], dtype=np.uint8))
            loaded._ids = np.array(data["ids"], dtype=np.int64)
        if loaded.kind == "hnsw":
            loaded._index.hnsw.efSearch = loaded.ef_search  # search-time setting, not serialised
        elif not loaded._is_flat():
            faiss.extract_index_ivf(loaded._index).nprobe = loaded.nprobe
        if loaded._index.ntotal != len(loaded._ids):
            raise ValueError(f"{path}: {loaded._index.ntotal} vectors but {len(loaded._ids)} ids")
        return loaded
