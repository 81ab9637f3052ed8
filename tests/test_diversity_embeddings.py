"""The embedding side of the diversity filter, on the real bundled MiniLM and real FAISS (no mocks).

The model is loaded once for the module; every test embeds a handful of short texts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from diversity import DiversityFilter, Encoder, VectorIndex, rouge_l_f1
from diversity.embeddings import resolve_precision

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SLEEP = "Give me three tips for sleeping better."
SLEEP_PARAPHRASE = "What are a few ways to improve the quality of my sleep?"
UNRELATED = [
    "Write a haiku about autumn leaves falling in a quiet park.",
    "Convert 72 degrees Fahrenheit to Celsius and show your work.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "Write a Python function that reverses a linked list.",
]
# MiniLM gives the sleep pair a cosine of about 0.81 and unrelated tasks well under 0.5, so 0.75 separates
# them; the filter's default (0.95) is deliberately stricter and only removes near-verbatim rewordings.
PARAPHRASE_THRESHOLD = 0.75


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu")


@pytest.mark.slow
def test_encoder_returns_unit_float32_rows(encoder: Encoder) -> None:
    vectors = encoder.encode([SLEEP, *UNRELATED])
    assert vectors.dtype == np.float32
    assert vectors.shape == (5, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)


@pytest.mark.slow
def test_paraphrase_with_low_rouge_is_rejected_by_the_embedding_rule(encoder: Encoder) -> None:
    assert rouge_l_f1(SLEEP, SLEEP_PARAPHRASE) < 0.2
    vectors = encoder.encode([SLEEP, SLEEP_PARAPHRASE])
    dedup = DiversityFilter(0.85, PARAPHRASE_THRESHOLD, pool_texts=[SLEEP], pool_ids=[7], pool_vectors=vectors[:1])
    (verdict,) = dedup.check_batch([SLEEP_PARAPHRASE], vectors[1:], [8])
    assert not verdict.kept
    assert verdict.rule == "embedding"
    assert verdict.rouge_score < 0.85
    assert verdict.embedding_nearest_id == 7
    assert verdict.cosine is not None and verdict.cosine > PARAPHRASE_THRESHOLD
    assert len(dedup) == 1


@pytest.mark.slow
def test_unrelated_tasks_pass_and_report_their_neighbours(encoder: Encoder) -> None:
    dedup = DiversityFilter(0.85, PARAPHRASE_THRESHOLD, pool_texts=[SLEEP], pool_ids=[0], encoder=encoder)
    verdicts = dedup.check_batch(UNRELATED, encoder.encode(UNRELATED), [1, 2, 3, 4])
    assert [v.kept for v in verdicts] == [True] * 4
    assert all(v.rule is None for v in verdicts)
    # Neighbours are filled for kept candidates too: the pool, then earlier kept batch members.
    assert all(v.cosine is not None and v.cosine < 0.5 for v in verdicts)
    assert verdicts[0].embedding_nearest_id == 0
    assert len(dedup) == 5
    assert dedup.ids == (0, 1, 2, 3, 4)


@pytest.mark.slow
def test_within_batch_duplicates_are_caught(encoder: Encoder) -> None:
    batch = [UNRELATED[0], SLEEP, UNRELATED[0], SLEEP_PARAPHRASE]
    dedup = DiversityFilter(0.85, PARAPHRASE_THRESHOLD, encoder=encoder)
    verdicts = dedup.check_batch(batch, ids=[10, 11, 12, 13])
    assert [v.kept for v in verdicts] == [True, True, False, False]
    assert verdicts[2].rule == "rouge"
    assert verdicts[2].rouge_nearest_id == 10
    assert verdicts[2].rouge_score == 1.0
    assert verdicts[3].rule == "embedding"
    assert verdicts[3].embedding_nearest_id == 11
    # Rejected candidates do not join the pool, so they cannot reject anything later.
    assert dedup.ids == (10, 11)


@pytest.mark.slow
def test_embedding_rule_can_be_disabled(encoder: Encoder) -> None:
    dedup = DiversityFilter(0.85, None, pool_texts=[SLEEP])
    (verdict,) = dedup.check_batch([SLEEP_PARAPHRASE])
    assert verdict.kept and verdict.rule is None and verdict.cosine is None
    (copy,) = dedup.check_batch([SLEEP])
    assert copy.rule == "rouge"


@pytest.mark.slow
def test_lazy_encoding_skips_candidates_rouge_rejects(tmp_path: Path) -> None:
    with Encoder(device="cpu", cache_path=tmp_path / "cache.sqlite") as encoder:
        dedup = DiversityFilter(0.85, 0.95, pool_texts=[SLEEP], encoder=encoder)
        assert encoder.encoded_count == 1
        verdicts = dedup.check_batch([SLEEP + "!", UNRELATED[1]])
        assert encoder.encoded_count == 2  # the ROUGE-L duplicate was never embedded
        assert verdicts[0].rule == "rouge" and verdicts[0].cosine is None
        assert verdicts[1].kept and verdicts[1].cosine is not None


@pytest.mark.slow
def test_cache_avoids_re_encoding(encoder: Encoder, tmp_path: Path) -> None:
    cache = tmp_path / "embeddings.sqlite"
    with Encoder(device="cpu", cache_path=cache) as first:
        vectors = first.encode([SLEEP, SLEEP_PARAPHRASE, SLEEP])
        assert first.encoded_count == 2  # the repeat within the call is embedded once
        np.testing.assert_array_equal(vectors[0], vectors[2])
    with Encoder(device="cpu", cache_path=cache) as resumed:  # a resumed run: a new process, same file
        again = resumed.encode([SLEEP_PARAPHRASE, UNRELATED[0], SLEEP])
        assert resumed.encoded_count == 1  # only the new text reached the model
        assert resumed.cache_hits == 2
        np.testing.assert_array_equal(again[0], vectors[1])
        np.testing.assert_array_equal(again[2], vectors[0])
        np.testing.assert_allclose(again[1], encoder.encode([UNRELATED[0]])[0], atol=1e-5)


@pytest.mark.slow
def test_bf16_autocast_gives_the_float32_vectors_under_another_cache_key(tmp_path: Path) -> None:
    texts = [SLEEP, SLEEP_PARAPHRASE, *UNRELATED]
    cache = tmp_path / "embeddings.sqlite"
    # torch pinned: OpenVINO (the CPU default where installed) ignores its bf16 hint on a CPU without native bf16
    # and computes float32, which made this check fail on an AVX2-only host.
    with Encoder(device="cpu", precision="float32", cache_path=cache, backend="torch") as full:
        reference = full.encode(texts)
    with Encoder(device="cpu", precision="bfloat16", cache_path=cache, backend="torch") as half:
        vectors = half.encode(texts)
        assert half.encoded_count == len(texts)  # float32 entries are not reused for bf16
        assert half.key(SLEEP) != full.key(SLEEP)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() > 0.9995, cosines
    assert not np.array_equal(vectors, reference)  # autocast really ran in bf16
    assert resolve_precision("auto", "cpu") in ("float32", "bfloat16")
    assert resolve_precision("float32", "cpu") == "float32"


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_vector_index_round_trip(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(16, kind)  # type: ignore[arg-type]
    index.add(np.arange(1000, 1300), vectors)
    queries = vectors[:20] + 0.01 * rng.standard_normal((20, 16)).astype(np.float32)
    ids, sims = index.search(queries, 5)
    assert ids[:, 0].tolist() == list(range(1000, 1020))
    index.save(tmp_path / "index")
    # no temporary file left behind: the committed state and one generation of vectors and ids
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["ids.1.i64", "state.json", "vectors.1.f32"]
    loaded = VectorIndex.load(tmp_path / "index")
    assert len(loaded) == 300 and loaded.kind == kind
    loaded_ids, loaded_sims = loaded.search(queries, 5)
    if kind == "exact":
        np.testing.assert_array_equal(loaded_ids, ids)
        np.testing.assert_array_equal(loaded_sims, sims)
    else:  # an HNSW graph is rebuilt on load (see VectorIndex.load); each query still finds its own row
        assert loaded_ids[:, 0].tolist() == ids[:, 0].tolist()


def test_vector_index_pads_missing_results() -> None:
    index = VectorIndex(4)
    ids, sims = index.search(np.eye(4, dtype=np.float32)[:2], 3)
    assert (ids == -1).all() and np.isneginf(sims).all()
    index.add([5, 6], np.eye(4, dtype=np.float32)[:2])
    ids, sims = index.search(np.eye(4, dtype=np.float32)[:1], 3)
    assert ids.tolist() == [[5, 6, -1]]
    assert sims[0, 0] == pytest.approx(1.0) and np.isneginf(sims[0, 2])


def test_ivf_stays_exact_until_trained_then_switches(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit rows: each row is its own best match
    index = VectorIndex(8, "ivf", nlist=4, nprobe=4, min_train=200)
    index.add(range(100), vectors[:100])
    assert not index.trained
    assert index.search(vectors[:5], 1)[0][:, 0].tolist() == [0, 1, 2, 3, 4]
    index.add(range(100, 400), vectors[100:])
    assert index.trained and len(index) == 400
    ids, _ = index.search(vectors[:50], 1)
    assert ids[:, 0].tolist() == list(range(50))  # nprobe == nlist: every bucket scanned, so still exact
    index.save(tmp_path / "ivf")
    loaded = VectorIndex.load(tmp_path / "ivf")
    assert loaded.trained
    np.testing.assert_array_equal(loaded.search(vectors[:50], 3)[0], index.search(vectors[:50], 3)[0])


def test_large_batches_are_decided_in_order_across_chunks() -> None:
    texts = [f"Task number {i}: describe the colour {i} in words." for i in range(300)]
    texts[280] = texts[3]  # a duplicate past the first internal chunk of 256
    dedup = DiversityFilter(0.85, None)
    verdicts = dedup.check_batch(texts, ids=list(range(1000, 1300)))
    assert verdicts[280].rule == "rouge" and verdicts[280].rouge_nearest_id == 1003
    assert len(dedup) == sum(v.kept for v in verdicts)


def test_filter_adopts_a_saved_pool_index_and_refuses_one_for_another_pool(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((12, 16)).astype(np.float32)
    texts = [f"task number {i} about topic {i * 7}" for i in range(12)]
    built = DiversityFilter(0.85, 0.9, pool_texts=texts[:10], pool_vectors=vectors[:10])
    assert built.index is not None
    built.index.save(tmp_path / "pool")
    adopted = DiversityFilter(0.85, 0.9, pool_texts=texts[:10], pool_index=VectorIndex.load(tmp_path / "pool"))
    assert len(adopted) == 10 and adopted.ids == built.ids
    queries = np.vstack([vectors[10:], vectors[3:4] + 0.01])  # two new tasks and a near-copy of task 3
    batch = ["a new task", "another new task", "near copy"]
    assert adopted.check_batch(batch, queries) == built.check_batch(batch, queries)
    with pytest.raises(ValueError, match="ids"):
        DiversityFilter(0.85, 0.9, pool_texts=texts[:9], pool_index=VectorIndex.load(tmp_path / "pool"))
    with pytest.raises(ValueError, match="embedding rule is off"):
        DiversityFilter(0.85, None, pool_texts=texts[:10], pool_index=VectorIndex.load(tmp_path / "pool"))
