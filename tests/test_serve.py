"""The embedded local teacher (sedi.serve) driven by the official openai client, on real models.

The tiny model (tests/tiny_model.py) checks the protocol; the bundled Gemma-3-270m checks the real
default path once (its first conversion takes about a minute and is cached across runs).
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import torch
from openai.types.chat import ChatCompletionMessageParam
from transformers import AutoTokenizer

from sedi.exceptions import ConfigError
from sedi.serve import BUNDLED_MODEL_NAME, Engine, bundled_model_dir
from sedi.serve._sampling import CategoricalSampler, OpenAIPenalties
from tests.servers import Served
from tests.tiny_model import build_tiny_model

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You write instructions."},
    {"role": "user", "content": "Write a short poem about the sea."},
]
SELF_INSTRUCT_PROMPT = (
    "Come up with a series of tasks:\n"
    "1. Instruction: Give three tips for staying healthy.\n"
    "2. Instruction: Translate the sentence into French.\n"
    "3. Instruction:"
)


def client(server: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)


def test_models_list_and_retrieve(tiny_server: Served) -> None:
    api = client(tiny_server)
    assert [model.id for model in api.models.list().data] == ["tiny-chat"]
    assert api.models.retrieve("tiny-chat").owned_by == "sedi"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("gpt-4o")


def test_chat_completion_usage_and_length(tiny_server: Served, tiny_model_dir: Path) -> None:
    before = tiny_server.request_counts["/v1/chat/completions"]
    reply = client(tiny_server).chat.completions.create(
        model="tiny-chat", messages=MESSAGES, max_tokens=5, temperature=0
    )
    assert tiny_server.request_counts["/v1/chat/completions"] == before + 1
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == "tiny-chat"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    # The untrained model never emits <eos> greedily here, so 5 tokens hit the limit.
    assert choice.finish_reason == "length"
    usage = reply.usage
    assert usage is not None
    tokenizer: Any = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected_prompt = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert usage.prompt_tokens == len(expected_prompt["input_ids"])
    assert usage.completion_tokens == 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    limited = client(tiny_server).chat.completions.create(
        model="tiny-chat", messages=MESSAGES, max_completion_tokens=3, temperature=0
    )
    assert limited.usage is not None and limited.usage.completion_tokens == 3


def test_seed_reproduces_and_stop_truncates(tiny_server: Served) -> None:
    api = client(tiny_server)

    def chat(**extra: Any) -> Any:
        return api.chat.completions.create(
            model="tiny-chat", messages=MESSAGES, max_tokens=24, temperature=1.0, **extra
        )

    first, again, other = chat(seed=1234), chat(seed=1234), chat(seed=4321)
    text = first.choices[0].message.content
    assert len(text) >= 12
    assert again.choices[0].message.content == text
    assert other.choices[0].message.content != text

    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped = chat(seed=1234, stop=[stop, "never appears in gibberish"])
    assert stopped.choices[0].message.content == text[: text.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens <= first.usage.completion_tokens


def test_completions_greedy_prompt_list_and_penalties(tiny_server: Served, tiny_model_dir: Path) -> None:
    api = client(tiny_server)

    def complete(**extra: Any) -> Any:
        return api.completions.create(model="tiny-chat", max_tokens=12, temperature=0, **extra)

    plain = complete(prompt="Write a")
    choice = plain.choices[0]
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert choice.text and choice.finish_reason == "length" and choice.logprobs is None
    prompt_ids = AutoTokenizer.from_pretrained(tiny_model_dir)("Write a")["input_ids"]
    assert plain.usage.prompt_tokens == len(prompt_ids)
    assert (plain.usage.completion_tokens, plain.usage.total_tokens) == (12, len(prompt_ids) + 12)

    assert complete(prompt=["Write a"]).choices[0].text == choice.text  # greedy: deterministic
    # The untrained model repeats one token greedily; penalties must push it off that token.
    assert complete(prompt="Write a", presence_penalty=2.0).choices[0].text != choice.text
    assert complete(prompt="Write a", frequency_penalty=2.0).choices[0].text != choice.text
    # Unknown extra fields are ignored, not rejected.
    assert complete(prompt="Write a", extra_body={"logit_bias": {}, "foo": 1}).choices[0].text == choice.text


def test_penalties_follow_openai_formula() -> None:
    presence, frequency = 0.5, 0.25
    processor = OpenAIPenalties(prompt_length=2, presence_penalty=presence, frequency_penalty=frequency)
    input_ids = torch.tensor([[5, 7, 7, 7, 9]])  # prompt [5, 7]; generated 7, 7, 9
    scores = torch.zeros(1, 12)
    out = processor(input_ids, scores)  # type: ignore[arg-type]
    expected = torch.zeros(1, 12)
    expected[0, 7] = -(presence + 2 * frequency)  # prompt occurrences do not count
    expected[0, 9] = -(presence + frequency)
    assert torch.allclose(out, expected)


def draw_many(sampler: CategoricalSampler, logits: list[float], draws: int = 4000) -> torch.Tensor:
    scores = torch.tensor([logits])
    picks = []
    for _ in range(draws):
        out = sampler(torch.zeros(1, 1, dtype=torch.long), scores.clone())  # type: ignore[arg-type]
        assert int(torch.isfinite(out).sum()) == 1  # exactly one selectable token
        picks.append(int(out.argmax()))
    return torch.bincount(torch.tensor(picks), minlength=len(logits)).float() / draws


def test_sampler_matches_temperature_and_nucleus() -> None:
    logits = [2.0, 1.0, 0.0, -1.0]
    # Temperature 0.5 doubles the logits; nucleus 0.95 of [0.865, 0.117, 0.016, 0.002] keeps tokens 0 and 1.
    sampler = CategoricalSampler(0.5, 0.95, torch.Generator().manual_seed(0), candidates=3)
    freq = draw_many(sampler, logits)
    probs = torch.tensor(logits).mul(2).softmax(-1)[:2]
    assert freq[2:].sum() == 0
    assert torch.allclose(freq[:2], probs / probs.sum(), atol=0.02)
    # No nucleus: every token in proportion to softmax(logits / T).
    freq = draw_many(CategoricalSampler(1.0, 1.0, torch.Generator().manual_seed(1)), logits)
    assert torch.allclose(freq, torch.tensor(logits).softmax(-1), atol=0.02)
    # A nucleus wider than the candidates falls back to a full sort: 20 equal tokens, top_p 0.5 -> 10 of them.
    freq = draw_many(CategoricalSampler(1.0, 0.5, torch.Generator().manual_seed(2), candidates=4), [0.0] * 20)
    assert int((freq > 0).sum()) == 10


def test_the_nucleus_searches_agree_draw_by_draw_on_tied_logits() -> None:
    # bf16 logits over a large vocabulary tie exactly in many places: whichever search finds the nucleus (the
    # probability floor, the top-k or the full sort), the same draw must pick the same token.
    generator = torch.Generator().manual_seed(3)
    rows = (torch.randn(30, 50_000, generator=generator) * 5).to(torch.bfloat16).float()  # the floor holds top_p
    # 100 tokens of 0.85 in all, 920 just under the floor (1e-4, 0.09 in all), the rest 0.06: only the top-k (1024)
    # holds top_p (0.9).
    for row in rows[20:]:
        order = torch.randperm(50_000, generator=generator)
        row.fill_(math.log(0.06 / (50_000 - 1020)))
        row[order[:100]], row[order[100:1020]] = math.log(0.0085), math.log(0.09 / 920)
    rows[0] = 0.0  # flat: the top-k holds too little, so the full sort decides
    searches = {"floor": {}, "top-k": {"floor": 2.0}, "sort": {"floor": 2.0, "candidates": 8}}
    picked = {}
    for name, options in searches.items():
        sampler = CategoricalSampler(1.0, 0.9, torch.Generator().manual_seed(11), **options)
        picked[name] = [int(sampler.draw(row[None])[0, 0]) for row in rows for _ in range(5)]
    assert picked["floor"] == picked["top-k"] == picked["sort"]
    assert len(set(picked["floor"][:5])) > 1  # the flat row draws among many tokens


def test_errors_use_openai_shapes_and_codes(tiny_server: Served) -> None:
    api = client(tiny_server)
    with pytest.raises(openai.NotFoundError) as missing:
        api.completions.create(model="gpt-4o", prompt="hi", max_tokens=2)
    assert missing.value.code == "model_not_found"

    bad_requests: list[tuple[dict[str, Any], str]] = [
        ({"stream": True}, "stream"),
        ({"n": 2}, "n=1"),
        ({"temperature": 5}, "temperature"),
        ({"prompt": ["one", "two"]}, "one prompt"),
        ({"prompt": "word " * 3000}, "context length"),
    ]
    for overrides, needle in bad_requests:
        request: dict[str, Any] = {"model": "tiny-chat", "prompt": "hi", "max_tokens": 2, **overrides}
        with pytest.raises(openai.BadRequestError) as bad:
            api.completions.create(**request)
        assert needle in bad.value.message, (overrides, bad.value.message)
        assert bad.value.type == "invalid_request_error"

    raw = httpx2.get(tiny_server.base_url + "/nope")
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "not_found"
    raw = httpx2.post(
        tiny_server.base_url + "/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"


def test_chat_without_template_is_a_bad_request(
    tiny_model_dir_no_template: Path, serve_engine: Callable[[Any], Served]
) -> None:
    engine = Engine.load(str(tiny_model_dir_no_template), device="cpu")
    assert engine.model_id == "tiny-base" and not engine.has_chat_template
    api = client(serve_engine(engine))
    with pytest.raises(openai.BadRequestError) as rejected:
        api.chat.completions.create(model="tiny-base", messages=MESSAGES, max_tokens=4)
    assert "chat template" in rejected.value.message and "teacher.mode: completion" in rejected.value.message
    completed = api.completions.create(model="tiny-base", prompt="Write a", max_tokens=4)
    assert completed.usage is not None and completed.usage.completion_tokens == 4


def test_generation_runs_off_the_event_loop(tiny_server: Served, tiny_engine: Any) -> None:
    engine = tiny_engine
    arrived = tiny_server.request_counts["/v1/completions"]
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(
            client(tiny_server).completions.create(model="tiny-chat", prompt="Write a", max_tokens=8, temperature=0)
        )
    )
    # Holding the scheduler's step lock stands in for a long generation in progress, independent of CPU
    # speed. Had the endpoint called generate() on the event loop, the loop would now be stuck waiting.
    with engine.scheduler.paused():
        worker.start()
        while tiny_server.request_counts["/v1/completions"] == arrived:
            time.sleep(0.01)
        time.sleep(0.2)
        started = time.monotonic()
        quick = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0, timeout=5)
        assert quick.models.list().data[0].id == "tiny-chat"
        assert time.monotonic() - started < 1
        assert worker.is_alive() and not result  # the completion waits for the decoding loop
    worker.join(timeout=60)
    assert result[0].usage.completion_tokens == 8


@pytest.mark.slow
def test_bundled_gemma_completion(serve_engine: Callable[[Any], Served]) -> None:
    started = time.monotonic()
    model_dir = bundled_model_dir()  # converts on a fresh machine (about a minute), else a cache hit
    first_call_s = time.monotonic() - started
    started = time.monotonic()
    assert bundled_model_dir() == model_dir
    assert time.monotonic() - started < 5
    assert (model_dir / "model.safetensors").is_file() and not list(model_dir.rglob("*.gguf"))
    assert not list(model_dir.parent.glob(f".{BUNDLED_MODEL_NAME}.tmp-*"))

    started = time.monotonic()
    engine = Engine.load(BUNDLED_MODEL_NAME)
    load_s = time.monotonic() - started
    assert load_s < 30
    if first_call_s > 30:  # this run converted: loading the cache must be far cheaper
        assert load_s < first_call_s / 2
    assert engine.model_id == BUNDLED_MODEL_NAME and not engine.has_chat_template

    api = client(serve_engine(engine))
    reply = api.completions.create(
        model=BUNDLED_MODEL_NAME, prompt=SELF_INSTRUCT_PROMPT, max_tokens=32, temperature=0.7, seed=7
    )
    choice = reply.choices[0]
    assert choice.text.strip()
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens == len(AutoTokenizer.from_pretrained(model_dir)(SELF_INSTRUCT_PROMPT)["input_ids"])
    assert 1 <= usage.completion_tokens <= 32
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert (choice.finish_reason == "length") == (usage.completion_tokens == 32)
    with pytest.raises(openai.BadRequestError, match="chat template"):
        api.chat.completions.create(model=BUNDLED_MODEL_NAME, messages=MESSAGES, max_tokens=4)


@pytest.mark.slow
def test_serve_exits_when_parent_pid_dies(tiny_model_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    code = f"from sedi.serve import serve; serve({str(tiny_model_dir)!r}, port={port}, parent_pid={parent.pid})"
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.2)
        time.sleep(1.5)  # the watch has checked at least once: a live parent must not stop the server
        assert server.poll() is None

        parent.kill()  # not reaped yet: a zombie still answers kill(pid, 0), the watch must see through it
        started = time.monotonic()
        assert server.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        for proc in (server, parent):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        log.close()


def test_engine_rejects_a_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither"):
        Engine.load(str(tmp_path / "nothing-here"))


def test_tiny_model_is_small_and_deterministic(tmp_path: Path, tiny_model_dir: Path) -> None:
    started = time.monotonic()
    again = build_tiny_model(tmp_path / "again")
    assert time.monotonic() - started < 5
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    tokenizer = AutoTokenizer.from_pretrained(again)
    assert 300 <= len(tokenizer) <= 500 and tokenizer.chat_template
    ids = tokenizer("Explain how photosynthesis works.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode(ids[1:]) == "Explain how photosynthesis works."
