"""Teacher servers side by side: the same workload of the default run's generation requests against each
OpenAI-compatible ``/v1`` endpoint, one after another, then one JSON line per backend and one with the ratios.

    python scripts/bench_teacher_backends.py [--url NAME=BASE_URL ...] [--start-embedded]
        [--start-llama PYTHON=GGUF] [--llama-arg=--n_threads=2 ...] [--requests 32] [--concurrency 16]
        [--max-tokens 384] [--rounds 1]

The workload is what ``sedi run`` sends with its default config: alpaca completion prompts of
``generation.human_in_context`` seed tasks (as ``scripts/bench_teacher.py --style alpaca``), the default sampling
(max_tokens, temperature, top_p, stops, penalties) and a per-request seed, sent by sedi's own ``send`` (the
fields a run puts on the wire) through the real ``openai`` client, ``--concurrency`` requests in flight. Each
backend's model name is read from its ``/v1/models``. Per backend: completion tokens/s over wall-clock seconds
(usage as the server reports it), prompt tokens per request, finishes, errors, and how sane the output is: the
share of answers from which the run's parser (``parse_generated``) extracts at least one task, and tasks per
answer. ``--start-embedded`` starts the embedded teacher (``sedi serve-teacher`` via the run's own
``LocalTeacher``, ``--max-batch`` = concurrency); ``--start-llama`` starts llama-cpp-python's server with that
interpreter on that GGUF file. Servers started here are stopped at the end. With ``--rounds`` > 1 the backends
alternate (A, B, A, B) so load from other work falls on both, each round with requests of its own (the same for
every backend); the ratios pool all rounds. The 1-minute load
average before each backend's round is in its line: above the core count, something else shared the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def workload(count: int, max_tokens: int | None) -> tuple[Any, list[Any]]:
    """The default config and ``count`` generation requests as a default run plans them (its prompt style, seed
    tasks per prompt, sampling and seeds)."""
    from sedi.config import load_config
    from sedi.config.seeds import load_seed_tasks
    from sedi.stages.generation import request_seed, sampled
    from sedi.stages.prompts import completion_prompt
    from sedi.teacher.request import TeacherRequest

    config = load_config(None)
    gen, sampling = config.generation, config.generation.sampling
    tasks = load_seed_tasks(None)
    rng = random.Random(config.run.seed)
    requests = [
        TeacherRequest(
            prompt=completion_prompt(rng.sample(tasks, gen.human_in_context), gen.prompt_style),
            max_tokens=max_tokens or sampling.max_tokens,
            **sampled(sampling),
            seed=request_seed(config.run.seed, index),
            sample_index=index,
        )
        for index in range(count)
    ]
    return config, requests


def model_of(base_url: str) -> str:
    import openai

    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30) as client:
        return client.models.list().data[0].id


async def measure(config: Any, base_url: str, requests: list[Any], concurrency: int) -> dict[str, Any]:
    """Send every request with ``concurrency`` in flight; the numbers of one backend's round."""
    import openai

    from sedi.stages.parsing import parse_generated
    from sedi.teacher.outcomes import send

    teacher = config.teacher.model_copy(update={"model": model_of(base_url), "mode": "completion"})
    style = config.generation.prompt_style
    gate = asyncio.Semaphore(concurrency)
    rows: list[dict[str, Any]] = []

    async def one(client: openai.AsyncOpenAI, request: Any) -> None:
        async with gate:
            began = time.monotonic()
            try:
                text, finish, usage, _ = await send(client, teacher, request)
            except Exception as exc:  # counted and shown: a backend that refuses a field must say so here
                rows.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
                return
            parsed = parse_generated(text, style=style, starts_inside_item=True, truncated=finish == "length")
            rows.append(
                {
                    "seconds": time.monotonic() - began,
                    "finish": finish,
                    "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                    "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
                    "tasks": len(parsed),
                }
            )

    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=3600) as client:
        await send(client, teacher, type(requests[0])(prompt=requests[0].prompt, max_tokens=4))  # warm-up
        started = time.monotonic()
        await asyncio.gather(*(one(client, r) for r in requests))
        seconds = time.monotonic() - started
    answered = [r for r in rows if "error" not in r]
    tokens = sum(r["completion_tokens"] for r in answered)
    return {
        "model": teacher.model,
        "seconds": round(seconds, 2),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "prompt_tokens_mean": round(sum(r["prompt_tokens"] for r in answered) / max(len(answered), 1), 1),
        "latency_mean_s": round(sum(r["seconds"] for r in answered) / max(len(answered), 1), 2),
        "length_finishes": sum(r["finish"] == "length" for r in answered),
        "stop_finishes": sum(r["finish"] == "stop" for r in answered),
        "errors": len(rows) - len(answered),
        "first_error": next((r["error"] for r in rows if "error" in r), None),
        "parsed_share": round(sum(r["tasks"] > 0 for r in answered) / max(len(answered), 1), 3),
        "tasks_per_answer": round(sum(r["tasks"] for r in answered) / max(len(answered), 1), 2),
    }


def start_llama(python: str, gguf: str, extra: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's OpenAI server on a free loopback port, niced like the rest of this benchmark."""
    import httpx2

    from sedi.teacher.endpoint import free_port

    port = free_port()
    command = ["nice", "-n", "10", python, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1"]
    command += ["--port", str(port), *extra]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx2.get(f"{base_url}/models", timeout=2.0).status_code == 200:
                return process, base_url
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"llama.cpp server did not come up: see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", default=[], help="NAME=BASE_URL of a running /v1 server.")
    parser.add_argument("--start-embedded", action="store_true", help="Start the embedded teacher (first backend).")
    parser.add_argument("--start-llama", help="PYTHON=GGUF: start llama-cpp-python's server with that interpreter.")
    parser.add_argument(
        "--llama-arg", action="append", default=[], help="Extra llama server argument, e.g. --n_ctx=4096."
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=None, help="Default: the config's sampling.max_tokens.")
    parser.add_argument("--rounds", type=int, default=1, help="Rounds; backends alternate within each.")
    args = parser.parse_args()
    backends: dict[str, str] = {}
    for item in args.url:
        name, _, url = item.partition("=")
        if not url:
            parser.exit(2, f"error: --url {item!r}: give NAME=BASE_URL, e.g. llama=http://127.0.0.1:8001/v1\n")
        backends[name] = url
    if not (backends or args.start_embedded or args.start_llama):
        parser.exit(2, "error: no backend: give --url NAME=BASE_URL, --start-embedded or --start-llama\n")

    from sedi.base.hardware import host_summary
    from sedi.teacher.endpoint import LocalTeacher

    # A round's own requests (the same for every backend): the embedded server answers a repeated seeded request from
    # memory (docs/serve.md), so a round that resent the first one's would measure nothing.
    config, requests = workload(args.requests * args.rounds, args.max_tokens)
    logs = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    embedded, llama = None, None
    try:
        if args.start_embedded:
            embedded = LocalTeacher(config.teacher, logs, max_batch=args.concurrency)
            backends = {"embedded": embedded.start().base_url, **backends}
        if args.start_llama:
            python, _, gguf = args.start_llama.partition("=")
            llama, url = start_llama(
                python, gguf, [a for arg in args.llama_arg for a in arg.split("=", 1)], logs / "llama.log"
            )
            backends["llama"] = url
        totals: dict[str, list[float]] = {name: [0.0, 0.0] for name in backends}
        for round_index in range(args.rounds):
            order = list(backends) if round_index % 2 == 0 else list(reversed(backends))
            for name in order:
                load = round(os.getloadavg()[0], 2)
                batch = requests[round_index * args.requests : (round_index + 1) * args.requests]
                result = asyncio.run(measure(config, backends[name], batch, args.concurrency))
                totals[name][0] += result["completion_tokens"]
                totals[name][1] += result["seconds"]
                line = {"backend": name, "base_url": backends[name], "round": round_index, "load_avg_1m_before": load}
                line |= {"requests": args.requests, "concurrency": args.concurrency, **result}
                print(json.dumps(line), flush=True)
        rates = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
        first = next(iter(rates))
        summary: dict[str, Any] = {"baseline": first, "tokens_per_s": {n: round(r, 2) for n, r in rates.items()}}
        summary["ratio_over_baseline"] = {n: round(r / rates[first], 2) for n, r in rates.items()}
        summary["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        summary["logs"] = str(logs)
        summary["host"] = host_summary()
        print(json.dumps(summary))
    finally:
        if embedded is not None:
            embedded.stop()
        if llama is not None:
            llama.terminate()
            llama.wait(timeout=30)


if __name__ == "__main__":
    main()
