"""The pool index on disk: each save appends only the new vectors, a crash tail is ignored, a reloaded exact or
IVF index decides exactly like one that never stopped, an old ``.npz`` index still loads, and the kind can change.
Real FAISS, real files."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.scale import derived_vectors, embedding_rule, exact_rule
from diversity import VectorIndex
from diversity.index import AUTO_EXACT_BELOW

DIM = 16


def unit_rows(n: int, seed: int) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_each_save_appends_only_the_vectors_added_since_the_last_one(tmp_path: Path) -> None:
    vectors = unit_rows(3000, 0)
    index = VectorIndex(DIM)
    index.add(range(2000), vectors[:2000])
    first = index.save(tmp_path / "pool")
    row_bytes = 4 * DIM + 8  # a float32 vector and an int64 id
    assert 2000 * row_bytes <= first < 2000 * row_bytes + 4096
    vector_file = tmp_path / "pool" / "vectors.1.f32"
    inode = vector_file.stat().st_ino
    for start in range(2000, 3000, 100):  # ten rounds of 100 new vectors each
        index.add(range(start, start + 100), vectors[start : start + 100])
        written = index.save(tmp_path / "pool")
        assert 100 * row_bytes <= written < 100 * row_bytes + 4096  # the new rows and a small state file
    assert vector_file.stat().st_ino == inode and vector_file.stat().st_size == 3000 * 4 * DIM  # appended in place
    loaded = VectorIndex.load(tmp_path / "pool")
    np.testing.assert_array_equal(loaded.ids, np.arange(3000))
    np.testing.assert_array_equal(loaded.search(vectors[::7], 3)[0], index.search(vectors[::7], 3)[0])


def test_rows_appended_by_a_save_that_crashed_before_its_commit_are_ignored_then_truncated(tmp_path: Path) -> None:
    vectors = unit_rows(600, 1)
    index = VectorIndex(DIM)
    index.add(range(500), vectors[:500])
    index.save(tmp_path / "pool")
    directory = tmp_path / "pool"
    with (directory / "vectors.1.f32").open("ab") as out:  # a save killed after appending, before state.json
        out.write(vectors[500:550].tobytes())
    with (directory / "ids.1.i64").open("ab") as out:
        out.write(np.arange(500, 530, dtype="<i8").tobytes())  # and torn mid-way
    resumed = VectorIndex.load(directory)
    assert len(resumed) == 500
    np.testing.assert_array_equal(resumed.search(vectors[:40], 2)[0], index.search(vectors[:40], 2)[0])
    resumed.add(range(500, 600), vectors[500:])
    resumed.save(directory)
    assert (directory / "vectors.1.f32").stat().st_size == 600 * 4 * DIM  # the tail went before the append
    again = VectorIndex.load(directory)
    np.testing.assert_array_equal(again.ids, np.arange(600))
    assert again.search(vectors[500:600], 1)[0][:, 0].tolist() == list(range(500, 600))


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_a_resumed_index_finds_exactly_what_an_uninterrupted_one_finds(kind: str, tmp_path: Path) -> None:
    # IVF with 8 buckets, 2 probed, trained at 400 vectors: the resumed index must reuse the saved centroids,
    # or its buckets (and so its misses) would differ.
    settings = {"nlist": 8, "nprobe": 2, "min_train": 400}
    vectors = unit_rows(1200, 2)
    queries = unit_rows(200, 3)
    whole = VectorIndex(DIM, kind, **settings)  # type: ignore[arg-type]
    resumed = VectorIndex(DIM, kind, **settings)  # type: ignore[arg-type]
    for start in range(0, 1200, 150):  # rounds of 150; the resumed one is saved and reloaded every round
        whole.add(range(start, start + 150), vectors[start : start + 150])
        resumed.add(range(start, start + 150), vectors[start : start + 150])
        resumed.save(tmp_path / "pool")
        resumed = VectorIndex.load(tmp_path / "pool")
    assert resumed.trained and whole.trained
    whole_ids, whole_sims = whole.search(queries, 5)
    resumed_ids, resumed_sims = resumed.search(queries, 5)
    np.testing.assert_array_equal(resumed_ids, whole_ids)
    np.testing.assert_array_equal(resumed_sims, whole_sims)
    if kind == "ivf":  # approximate for real: two of eight buckets miss some true neighbours
        exact_ids = VectorIndex(DIM)
        exact_ids.add(range(1200), vectors)
        assert (exact_ids.search(queries, 5)[0] != whole_ids).any()
        state = json.loads((tmp_path / "pool" / "state.json").read_text())
        assert state["centroids"] and state["count"] == 1200


def write_npz_index(path: Path, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
    """An index as the earlier single-file format stored it (serialised FAISS index, ids, settings)."""
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    settings = {"dim": DIM, "kind": "exact", "hnsw_m": 32, "ef_search": 128, "nlist": 1024, "nprobe": 32,
                "min_train": 39936}  # fmt: skip
    np.savez(path, index=faiss.serialize_index(flat), ids=ids, settings=np.array(json.dumps(settings)))


def test_an_index_saved_in_the_old_npz_format_loads_and_migrates_to_a_directory(tmp_path: Path) -> None:
    vectors = unit_rows(300, 4)
    write_npz_index(tmp_path / "pool.npz", np.arange(100, 400), vectors)
    old = VectorIndex.load(tmp_path / "pool.npz")
    assert len(old) == 300 and old.search(vectors[:10], 1)[0][:, 0].tolist() == list(range(100, 110))
    old.add([400], unit_rows(1, 5))
    assert old.save(tmp_path / "pool") >= 301 * (4 * DIM + 8)  # first save in the new format writes every row
    migrated = VectorIndex.load(tmp_path / "pool")
    np.testing.assert_array_equal(migrated.ids, np.arange(100, 401))
    np.testing.assert_array_equal(migrated.search(vectors, 2)[0], old.search(vectors, 2)[0])


def test_a_changed_kind_is_rebuilt_from_the_stored_vectors(tmp_path: Path) -> None:
    vectors = unit_rows(500, 6)
    exact = VectorIndex(DIM)
    exact.add(range(500), vectors)
    exact.save(tmp_path / "pool")
    as_ivf = VectorIndex.load(tmp_path / "pool", kind="ivf")
    assert as_ivf.kind == "ivf" and len(as_ivf) == 500
    assert not as_ivf.trained  # a fresh IVF index waits for its own min_train
    as_hnsw = VectorIndex.load(tmp_path / "pool", kind="hnsw")
    assert as_hnsw.search(vectors[:50], 1)[0][:, 0].tolist() == list(range(50))
    as_hnsw.save(tmp_path / "pool")  # another kind than the one stored: a new generation, not an append
    state = json.loads((tmp_path / "pool" / "state.json").read_text())
    assert state["generation"] == 2 and state["settings"]["kind"] == "hnsw"
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["ids.2.i64", "state.json", "vectors.2.f32"]


def test_auto_stays_exact_until_its_measured_size_then_buckets() -> None:
    assert VectorIndex(DIM, "auto").min_train == max(AUTO_EXACT_BELOW, 39 * 1024)
    index = VectorIndex(DIM, "auto", nlist=4, nprobe=4, min_train=300)
    vectors = unit_rows(400, 7)
    index.add(range(299), vectors[:299])
    assert not index.trained
    index.add(range(299, 400), vectors[299:])
    assert index.trained and index.centroids() is not None
    assert index.search(vectors[:30], 1)[0][:, 0].tolist() == list(range(30))  # every bucket probed: exact


@pytest.mark.slow
def test_the_exact_reference_of_the_scale_benchmark_decides_like_the_filters_exact_index() -> None:
    bases = unit_rows(600, 8)
    stream = list(derived_vectors(bases, 1500, seed=3, chunk=500))
    exact = embedding_rule(VectorIndex(DIM), iter(stream), threshold=0.95, batch=20).decisions
    assert 0.05 < exact.mean() < 0.98  # the stream has near-duplicates and distinct vectors alike
    np.testing.assert_array_equal(exact_rule(iter(stream), threshold=0.95, block=300), exact)
    assert exact_rule(iter(stream), threshold=0.95, limit=700).tolist() == exact[:700].tolist()
    ivf = embedding_rule(VectorIndex(DIM, "ivf", nlist=8, nprobe=8, min_train=400), iter(stream), 0.95, 20)
    np.testing.assert_array_equal(ivf.decisions, exact)  # every bucket probed: IVF is exact too


def test_a_shorter_derived_stream_is_a_prefix_of_a_longer_one() -> None:
    """The scale benchmark checks a long approximate run against a short exact one: that only means something
    if the short stream is the long one's beginning, whatever the chunking."""
    bases = unit_rows(50, 9)
    long = np.concatenate(list(derived_vectors(bases, 1000, seed=1, chunk=300)))
    short = np.concatenate(list(derived_vectors(bases, 450, seed=1, chunk=300)))
    assert long.shape == (1000, DIM) and short.shape == (450, DIM)
    np.testing.assert_array_equal(short, long[:450])
    np.testing.assert_allclose(np.linalg.norm(long, axis=1), 1.0, rtol=1e-5)
    other_seed = np.concatenate(list(derived_vectors(bases, 450, seed=2, chunk=300)))
    assert not np.allclose(other_seed, short)
