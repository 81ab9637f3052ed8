"""Continuous batching in the embedded teacher (sedi/serve/_decoding.py, _kvcache.py).

Exactness is checked in float32 on tiny models built in code: the tiny Llama (full attention) and a tiny
Gemma-3 with an 8-token sliding window, so that prompts and completions cross the window and the cache
surgery of both layer kinds is exercised. The bundled Gemma (bf16) checks that a batch of one still
reproduces ``model.generate`` bit for bit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList

from sedi.serve import Engine, GenerationResult
from sedi.serve._decoding import GenerationCancelled
from sedi.serve._sampling import CategoricalSampler, OpenAIPenalties
from tests.tiny_model import build_tiny_model

T = TypeVar("T")
PROMPTS = [
    "Write a",
    "Explain how photosynthesis works in simple terms.",
    "1. Instruction: List three tips.\n2. Instruction:",
    "Task 7: Translate the sentence into French. Answer: Bonjour.\nTask 8:",
]
SETTINGS: list[dict[str, Any]] = [
    {"temperature": 0},
    {"temperature": 1.0, "top_p": 0.9, "seed": 11},
    {"temperature": 0.7, "seed": 5, "presence_penalty": 0.5, "frequency_penalty": 0.4},
    {"temperature": 0, "frequency_penalty": 1.0},
]


def build_tiny_gemma(path: Path) -> Path:
    """The tiny model's tokenizer with a 2-layer Gemma-3 (one sliding layer, window 8, one full layer)."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    source = build_tiny_model(path.parent / "tiny-for-gemma")
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = Gemma3ForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "gemma3-sliding"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A fresh float32 engine per module and architecture, so that its batch statistics are its own."""
    root = tmp_path_factory.mktemp(request.param)
    path = build_tiny_model(root / "tiny") if request.param == "llama" else build_tiny_gemma(root / "tiny-gemma")
    yield Engine.load(str(path), device="cpu", dtype="float32")


def reference(engine: Engine, prompt: str, max_tokens: int, **settings: Any) -> GenerationResult:
    """What the engine answered before batching: model.generate on one sequence with the same processors."""
    ids = engine.tokenizer(prompt)["input_ids"]
    processors = LogitsProcessorList()
    if settings.get("presence_penalty") or settings.get("frequency_penalty"):
        processors.append(
            OpenAIPenalties(len(ids), settings.get("presence_penalty", 0.0), settings.get("frequency_penalty", 0.0))
        )
    if settings["temperature"] > 0:
        generator = torch.Generator(device=engine.device).manual_seed(settings["seed"])
        processors.append(CategoricalSampler(settings["temperature"], settings.get("top_p", 1.0), generator))

    def run() -> list[int]:
        input_ids = torch.tensor([ids], device=engine.device)
        with torch.inference_mode():
            out = engine.model.generate(  # type: ignore[operator]
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=GenerationConfig(do_sample=False, max_new_tokens=max_tokens),
                logits_processor=processors,
            )
        return list(out[0, len(ids) :].tolist())

    new = engine._torch_thread.submit(run).result()
    eos = [i for i, token in enumerate(new) if token in engine.eos_token_ids]
    if eos:
        new = new[: eos[0] + 1]
    text = str(engine.tokenizer.decode(new, skip_special_tokens=True))
    return GenerationResult(text, "stop" if eos else "length", len(ids), len(new))


def test_a_batch_of_one_reproduces_model_generate(engine: Engine) -> None:
    for prompt in PROMPTS[:2]:
        for settings in SETTINGS:
            assert engine.generate(prompt, max_tokens=20, **settings) == reference(engine, prompt, 20, **settings)


def concurrently(calls: list[Callable[[], T]], engine: Engine) -> list[T]:
    """Run the calls in threads, all queued before the scheduler takes any: one batch from the first step."""
    results: list[Any] = [None] * len(calls)

    def worker(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    with engine.scheduler.paused():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(engine.scheduler.queued()) < len(calls) and time.monotonic() < deadline:
            time.sleep(0.005)  # polling a condition; each call reaches the queue within milliseconds
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_batched_rows_keep_their_own_settings_and_results(engine: Engine) -> None:
    # Different prompt lengths (left padding), token limits (rows leave early: rows and columns are
    # trimmed while others decode), sampling settings, seeds and stop strings, in one batch of 8.
    jobs: list[tuple[str, int, dict[str, Any]]] = []
    for index in range(8):
        settings = dict(SETTINGS[index % len(SETTINGS)])
        if index == 5:
            settings["stop"] = ["e", "never"]
        jobs.append((PROMPTS[index % len(PROMPTS)], 6 + 5 * index, settings))
    singles = [engine.generate(prompt, max_tokens=limit, **settings) for prompt, limit, settings in jobs]
    largest_before = engine.scheduler.stats.largest_batch
    timed_before = engine.scheduler.stats.prefill_s, engine.scheduler.stats.decode_s
    batched = concurrently(
        [lambda p=p, n=n, s=s: engine.generate(p, max_tokens=n, **s) for p, n, s in jobs],  # type: ignore[misc]
        engine,
    )
    # Every request that needs a decoding step (more than the token its prefill chose) decoded in one batch.
    assert engine.scheduler.stats.largest_batch == sum(r.completion_tokens > 1 for r in singles) > largest_before
    # The engine thread's time is split between prompts and decoding steps, both counted (bench_teacher reports them).
    assert engine.scheduler.stats.prefill_s > timed_before[0] and engine.scheduler.stats.decode_s > timed_before[1]
    # float32: batching changes no logit enough to change a greedy pick or a seeded draw here.
    assert batched == singles
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in singles]
    assert singles[5].finish_reason == "stop" and "e" not in singles[5].text


# Long enough that the first request is still decoding when the test takes the step lock: with 200 tokens the tiny
# model once finished every step between the poll seeing 5 steps and the lock being taken, on an idle machine.
FIRST_TOKENS = 1500


@pytest.mark.slow
def test_requests_join_and_leave_a_running_batch(engine: Engine) -> None:
    long_prompt = PROMPTS[2] * 3  # longer than the running row's columns when it joins: the batch is padded
    expected = {
        "first": engine.generate(PROMPTS[1], max_tokens=FIRST_TOKENS, temperature=1.0, seed=3),
        "short": engine.generate(PROMPTS[0], max_tokens=10, temperature=0),
        "long": engine.generate(long_prompt, max_tokens=25, temperature=1.0, seed=4),
    }
    results: dict[str, GenerationResult] = {}
    first = threading.Thread(
        target=lambda: results.update(
            first=engine.generate(PROMPTS[1], max_tokens=FIRST_TOKENS, temperature=1.0, seed=3)
        )
    )
    steps_before = engine.scheduler.stats.steps
    first.start()
    deadline = time.monotonic() + 30
    while engine.scheduler.stats.steps < steps_before + 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    with engine.scheduler.paused():  # between two steps of the first request
        joiners = [
            threading.Thread(
                target=lambda: results.update(short=engine.generate(PROMPTS[0], max_tokens=10, temperature=0))
            ),
            threading.Thread(
                target=lambda: results.update(long=engine.generate(long_prompt, max_tokens=25, temperature=1.0, seed=4))
            ),
        ]
        for thread in joiners:
            thread.start()
        while len(engine.scheduler.queued()) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert "first" not in results
    for thread in [first, *joiners]:
        thread.join(timeout=120)
    assert results == expected
    # They overlapped: fewer steps than decoding the three one after another.
    steps = engine.scheduler.stats.steps - steps_before
    assert steps < sum(r.completion_tokens for r in expected.values()) - 3


def test_cancel_drops_a_row_before_its_next_forward_pass(engine: Engine) -> None:
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.generate(PROMPTS[1], max_tokens=1500, temperature=0, cancel=cancel)
        except GenerationCancelled as exc:
            outcome.append(exc)

    stats = engine.scheduler.stats
    steps_before, cancelled_before = stats.steps, stats.cancelled
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while stats.steps < steps_before + 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    with engine.scheduler.paused():
        steps_at_cancel = stats.steps
        cancel.set()
    worker.join(timeout=60)
    assert outcome and stats.cancelled == cancelled_before + 1
    assert stats.steps == steps_at_cancel  # not one more forward pass for it
    # A request cancelled while queued never costs a prefill either.
    with pytest.raises(GenerationCancelled):
        engine.generate(PROMPTS[0], max_tokens=5, cancel=cancel)
    assert stats.steps == steps_at_cancel
    assert engine.generate(PROMPTS[0], max_tokens=3, temperature=0).completion_tokens == 3  # still serving


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_must_be_positive(engine: Engine, max_batch: int) -> None:
    from sedi.serve._decoding import Scheduler

    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(engine.model, engine.device, engine._torch_thread, lambda job: True, max_batch=max_batch)


def test_bundled_gemma_batch_of_one_is_bit_exact(gemma_engine: Any) -> None:
    prompt = "Come up with a series of tasks:\n1. Instruction: Give three tips for staying healthy.\n2. Instruction:"
    settings: dict[str, Any] = {"temperature": 1.0, "top_p": 0.9, "seed": 7}
    assert gemma_engine.generate(prompt, max_tokens=16, **settings) == reference(gemma_engine, prompt, 16, **settings)


def test_concurrent_http_requests_share_a_batch_with_exact_usage(
    engine: Engine, serve_engine: Callable[[Any], Any]
) -> None:
    import openai

    api = openai.OpenAI(base_url=serve_engine(engine).base_url, api_key="x", max_retries=0, timeout=120)
    model = engine.model_id
    asks = [(PROMPTS[i], 5 + 7 * i) for i in range(4)]
    singles = [api.completions.create(model=model, prompt=p, max_tokens=n, temperature=0) for p, n in asks]
    stats = engine.scheduler.stats
    steps_before, rows_before = stats.steps, stats.rows_decoded
    batched = concurrently(
        [
            lambda p=p, n=n: api.completions.create(model=model, prompt=p, max_tokens=n, temperature=0)  # type: ignore[misc]
            for p, n in asks
        ],
        engine,
    )
    # Each prefill picks a request's first token; then all four decoded in the same steps: as many
    # steps as the longest needs, each one carrying every request still running.
    assert stats.steps - steps_before == max(limit for _, limit in asks) - 1
    assert stats.rows_decoded - rows_before == sum(limit - 1 for _, limit in asks)
    for single, together, (prompt, limit) in zip(singles, batched, asks, strict=True):
        assert together.choices[0].text == single.choices[0].text
        assert together.usage is not None and together.usage == single.usage
        assert together.usage.prompt_tokens == len(engine.tokenizer(prompt)["input_ids"])
        assert together.usage.completion_tokens == limit  # the untrained model emits no EOS greedily here
