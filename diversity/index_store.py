"""Append-only storage of a vector index's ids and vectors: a save writes the new rows, not the whole index.

A run saves its pool index after every round. Rewriting it each time (the old single ``.npz``) costs the
whole index per round: 1.5 GB at a million 384-d float32 vectors. Here an index directory holds

- ``vectors.<gen>.f32``: raw little-endian float32 rows, ``dim`` per vector, appended in insertion order;
- ``ids.<gen>.i64``: the caller's int64 id of each row, appended alongside;
- ``centroids.<gen>.f32``: an IVF index's trained k-means centroids, written once, when it trains, so that a
  reload rebuilds exactly the same buckets (no retraining, hence the same search results);
- ``state.json``: the number of committed rows, the index settings and the generation; replaced atomically.

A save appends, fsyncs both data files, then replaces ``state.json``: the state is the commit point.
A crash between the two leaves rows past ``count``; readers ignore them and the next save truncates them
before appending. A save that cannot append (another index was saved there, or the directory is new) writes
a fresh generation of files and points the state at it, so the old generation stays valid until then.
The store holds no vectors in memory; reads go through bounded chunks, so loading a million rows needs
no second 1.5 GB copy beside the FAISS index they are added to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FORMAT", "IndexStore"]

FORMAT = 2  # format 1 was the single-file .npz that VectorIndex.save wrote before
STATE = "state.json"
_CHUNK_ROWS = 65_536  # 96 MiB of 384-d float32 per read: bounded memory while rebuilding


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IndexStore:
    """One index directory. ``bytes_written`` counts the bytes the last :meth:`append`/:meth:`rewrite` wrote."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.bytes_written = 0

    def state(self) -> dict[str, Any] | None:
        """The committed state, or ``None`` when nothing was ever committed here."""
        path = self.directory / STATE
        if not path.is_file():
            return None
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if state.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown index format {state.get('format')!r}")
        return state

    def _paths(self, generation: int) -> tuple[Path, Path, Path]:
        d = self.directory
        return d / f"vectors.{generation}.f32", d / f"ids.{generation}.i64", d / f"centroids.{generation}.f32"

    def append(
        self,
        state: dict[str, Any],
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        settings: dict[str, Any],
        centroids: npt.NDArray[np.float32] | None,
    ) -> dict[str, Any]:
        """Commit ``ids``/``vectors`` after the ``state["count"]`` rows already committed; returns the new state.
        ``centroids`` are written if the state has none yet (an IVF index that trained since the last save)."""
        vector_path, id_path, centroid_path = self._paths(state["generation"])
        dim = settings["dim"]
        count = state["count"]
        written = 0
        parts = ((vector_path, vectors, "<f4", 4 * dim), (id_path, ids, "<i8", 8))
        for path, rows, dtype, row_bytes in parts:
            with path.open("r+b") as out:
                out.truncate(count * row_bytes)  # a crash tail past the committed rows goes first
                out.seek(count * row_bytes)
                data = np.ascontiguousarray(rows, dtype=dtype).tobytes()
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
                written += len(data)
        new_state = dict(state, count=count + len(ids), settings=settings)
        if centroids is not None and not state.get("centroids"):
            written += self._write_new(centroid_path, centroids)
            new_state["centroids"] = centroid_path.name
        self.bytes_written = written + self._commit(new_state)
        return new_state

    def rewrite(
        self,
        chunks: Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
        settings: dict[str, Any],
        centroids: npt.NDArray[np.float32] | None,
    ) -> dict[str, Any]:
        """Write every row into a new generation and commit it; the previous generation's files are removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        old = self.state()
        generation = (old["generation"] + 1) if old else 1
        vector_path, id_path, centroid_path = self._paths(generation)
        count = written = 0
        with vector_path.open("wb") as vector_out, id_path.open("wb") as id_out:
            for ids, vectors in chunks:
                vector_out.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                id_out.write(np.ascontiguousarray(ids, dtype="<i8").tobytes())
                count += len(ids)
            for out in (vector_out, id_out):
                out.flush()
                os.fsync(out.fileno())
                written += out.tell()
        state: dict[str, Any] = {"format": FORMAT, "generation": generation, "count": count, "settings": settings}
        if centroids is not None:
            written += self._write_new(centroid_path, centroids)
            state["centroids"] = centroid_path.name
        self.bytes_written = written + self._commit(state)
        if old:
            for path in self._paths(old["generation"]):
                path.unlink(missing_ok=True)
        return state

    def _write_new(self, path: Path, array: npt.NDArray[np.float32]) -> int:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        with path.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return len(data)

    def _commit(self, state: dict[str, Any]) -> int:
        """Replace the state file atomically (temporary file, fsync, rename, fsync of the directory)."""
        data = json.dumps(state, sort_keys=True).encode()
        tmp = self.directory / f".{STATE}.tmp"
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / STATE)
        _fsync_dir(self.directory)
        return len(data)

    def ids(self, state: dict[str, Any]) -> npt.NDArray[np.int64]:
        """The committed ids (a crash tail past ``count`` is not read)."""
        _, id_path, _ = self._paths(state["generation"])
        ids = np.fromfile(id_path, dtype="<i8", count=state["count"]).astype(np.int64)
        if len(ids) != state["count"]:
            raise ValueError(f"{id_path}: {len(ids)} ids, the state says {state['count']}")
        return ids

    def vector_chunks(self, state: dict[str, Any]) -> Iterator[npt.NDArray[np.float32]]:
        """The committed vectors in insertion order, ``_CHUNK_ROWS`` at a time."""
        vector_path, _, _ = self._paths(state["generation"])
        dim, count = state["settings"]["dim"], state["count"]
        with vector_path.open("rb") as handle:
            for start in range(0, count, _CHUNK_ROWS):
                rows = min(_CHUNK_ROWS, count - start)
                chunk = np.fromfile(handle, dtype="<f4", count=rows * dim)
                if chunk.size != rows * dim:
                    raise ValueError(f"{vector_path}: fewer vectors than the state's {count}")
                yield chunk.astype(np.float32, copy=False).reshape(rows, dim)

    def centroids(self, state: dict[str, Any]) -> npt.NDArray[np.float32] | None:
        """The IVF centroids committed with ``state``, if any."""
        name = state.get("centroids")
        if not name:
            return None
        data = np.fromfile(self.directory / name, dtype="<f4").astype(np.float32)
        return data.reshape(-1, state["settings"]["dim"])
