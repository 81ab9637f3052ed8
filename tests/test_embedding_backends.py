"""The encoder's backends: OpenVINO (the default on CPU) must give the filter the vectors and decisions torch gives.

Real bundled MiniLM, real OpenVINO conversion, real T0 prompts of many lengths; nothing mocked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.filter_reference import SAMPLE_CORPUS, read_texts
from diversity import Encoder
from diversity.embeddings import cpu_has_native_bf16, default_model_path, unsupported_files_reason

pytestmark = pytest.mark.slow  # every test here loads MiniLM (sentence-transformers, OpenVINO)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

THRESHOLD = 0.95  # the filter's default embedding threshold


@pytest.fixture(scope="module")
def texts() -> list[str]:
    corpus = read_texts(SAMPLE_CORPUS)
    picked = [corpus[i] for i in np.random.default_rng(0).permutation(len(corpus))[:40]]
    # Near-verbatim rewordings put pairs on both sides of the threshold, which is where decisions can flip.
    edits = [f"{text} Answer briefly." for text in picked[:12]] + [text.replace(" the ", " a ") for text in picked[:12]]
    return picked + edits + ["Hi.", "Write a poem."]


@pytest.fixture(scope="module")
def torch_vectors(texts: list[str]) -> np.ndarray:
    return Encoder(device="cpu", precision="float32", backend="torch").encode(texts)


def _pair_decisions(vectors: np.ndarray) -> np.ndarray:
    upper = np.triu_indices(len(vectors), 1)
    return (vectors @ vectors.T)[upper]


def test_auto_runs_openvino_on_cpu_with_torch_float32_vectors(texts: list[str], torch_vectors: np.ndarray) -> None:
    encoder = Encoder(device="cpu", precision="float32")
    assert encoder.backend == "openvino" and encoder.identity.endswith("|float32|openvino")
    vectors = encoder.encode(texts)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    assert encoder.encoded_count == len(set(texts))
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-4)
    ours, reference = _pair_decisions(vectors), _pair_decisions(torch_vectors)
    assert ((reference > THRESHOLD) == (ours > THRESHOLD)).all()
    assert 0 < (reference > THRESHOLD).sum() < len(reference)  # the texts do straddle the threshold


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is only chosen on CPUs that compute it natively")
def test_openvino_bf16_keeps_the_filters_decisions(texts: list[str], torch_vectors: np.ndarray) -> None:
    encoder = Encoder(device="cpu", precision="bfloat16", backend="openvino")
    assert encoder.identity.endswith("|bfloat16|openvino")
    vectors = encoder.encode(texts)
    assert (vectors * torch_vectors).sum(axis=1).min() > 0.9995
    ours, reference = _pair_decisions(vectors), _pair_decisions(torch_vectors)
    near = reference > 0.8  # where the rule decides; unrelated pairs move more (up to 0.003) and never matter
    assert near.sum() > 10 and np.abs(ours - reference)[near].max() < 1e-3
    clear = np.abs(reference - THRESHOLD) > 1e-3  # pairs farther from the threshold than bf16 moves them
    assert ((reference > THRESHOLD) == (ours > THRESHOLD))[clear].all()


@pytest.mark.skipif(cpu_has_native_bf16(), reason="only CPUs without native bf16 fall back to float32")
def test_openvino_asked_for_bf16_without_native_bf16_says_float32(caplog: pytest.LogCaptureFixture) -> None:
    # OpenVINO computes float32 there whatever the hint; the cache key must say what was computed.
    encoder = Encoder(device="cpu", precision="bfloat16", backend="openvino")
    assert encoder.precision == "float32" and encoder.identity.endswith("|float32|openvino")
    assert "no native bf16" in caplog.text


def test_backends_never_share_cached_vectors(tmp_path: Path, texts: list[str]) -> None:
    cache = tmp_path / "embeddings.sqlite"
    with Encoder(device="cpu", precision="float32", backend="torch", cache_path=cache) as first:
        first.encode(texts[:5])
    with Encoder(device="cpu", precision="float32", backend="openvino", cache_path=cache) as second:
        second.encode(texts[:5])
        assert second.cache_hits == 0 and second.encoded_count == 5
    with Encoder(device="cpu", precision="float32", backend="openvino", cache_path=cache) as third:
        third.encode(texts[:5])
        assert third.cache_hits == 5 and third.encoded_count == 0


def test_a_model_openvino_cannot_run_falls_back_to_torch_or_is_refused_by_name(tmp_path: Path) -> None:
    model = tmp_path / "cls-pooled"
    shutil.copytree(default_model_path(), model)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling.write_text(json.dumps(config))
    # The run's pre-flight check reads the same from the files, before anything is loaded or paid for.
    assert unsupported_files_reason(default_model_path()) is None
    assert unsupported_files_reason(model) == "it pools by 'pooling_mode_cls_token', not by the mean"
    assert Encoder(str(model), device="cpu").backend == "torch"
    with pytest.raises(ValueError, match=r"backend 'openvino' cannot run .*cls-pooled on cpu: it pools by 'cls'"):
        Encoder(str(model), device="cpu", backend="openvino")


def test_the_conversion_is_saved_once_and_read_back_by_the_next_process(tmp_path: Path, texts: list[str]) -> None:
    cache = tmp_path / "openvino"
    first = Encoder(device="cpu", precision="float32", compiled_cache=cache)
    saved = list(cache.glob("*/model.xml"))
    assert len(saved) == 1 and saved[0].with_suffix(".bin").stat().st_size > 80e6  # float32 weights, not fp16
    written = saved[0].stat().st_mtime_ns
    second = Encoder(device="cpu", precision="float32", compiled_cache=cache)
    assert list(cache.glob("*/model.xml")) == saved and saved[0].stat().st_mtime_ns == written
    assert not list(cache.glob(".partial-*"))
    # The saved graph is optimised again on reading, so the last float bits may differ (measured: 3e-8).
    np.testing.assert_allclose(second.encode(texts[:8]), first.encode(texts[:8]), atol=1e-6)


def test_auto_falls_back_to_torch_when_openvino_fails_and_openvino_says_why(
    monkeypatch: pytest.MonkeyPatch, texts: list[str], torch_vectors: np.ndarray
) -> None:
    """A platform where OpenVINO cannot compile the model cannot be provoked here, so its failure is simulated."""
    import diversity.embeddings

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(diversity.embeddings, "OpenVinoRunner", refuse)
    encoder = Encoder(device="cpu", precision="float32")
    assert encoder.backend == "torch" and not encoder.identity.endswith("openvino")
    np.testing.assert_allclose(encoder.encode(texts[:4]), torch_vectors[:4], atol=1e-6)
    with pytest.raises(RuntimeError, match="no kernel for this CPU"):
        Encoder(device="cpu", precision="float32", backend="openvino")


def test_converting_prints_no_stray_loss_warning(capfd: pytest.CaptureFixture[str]) -> None:
    """Tracing touched transformers' loss_function property, whose warning was the one stray line of `sedi run`."""
    import logging

    from transformers.utils import logging as transformers_logging

    transformers_logging.warning_once.cache_clear()  # a warning logged earlier in this process would hide it
    level = logging.getLogger("transformers.modeling_utils").level
    capfd.readouterr()
    encoder = Encoder(device="cpu", precision="float32", backend="openvino")  # no compiled_cache: converts here
    assert encoder.backend == "openvino"
    assert "loss_type" not in capfd.readouterr().err
    assert logging.getLogger("transformers.modeling_utils").level == level  # quiet only while converting
