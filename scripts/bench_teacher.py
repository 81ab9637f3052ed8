"""Throughput of the embedded teacher (sedi.serve) at 1, 4 and 8 concurrent requests (``--levels``), in one run.

Loads the bundled Gemma-3-270m engine and calls it directly from client threads (the HTTP layer adds
no decoding work), with the run's own kind of request: a completion prompt of 6 seed tasks, temperature
1.0, top_p 0.9, stops ["Task 16", "\\n\\n\\n"]. Each level keeps ``concurrency`` requests in flight until
``requests`` have completed; tokens/s counts completion tokens (usage) over wall-clock seconds, and
``prefill_s``/``decode_s`` split the engine thread's time between prompts and decoding steps.
Prints one JSON line. The CPU may be shared with other work: compare the speedups, which divide out
most of that, rather than absolute rates across runs.

    python scripts/bench_teacher.py [--requests 8] [--max-tokens 192] [--levels 1,4,8] [--style alpaca]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import threading
import time
from typing import Any

from sedi.base.hardware import go_offline, host_summary

go_offline()  # before transformers is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as sedi.serve.serve does


def prompts(count: int, seed: int = 0, style: str = "self-instruct") -> list[str]:
    """``style`` 'alpaca' gives the default run's prompts (whole seed tasks, about 600-850 tokens); 'self-instruct'
    the instruction lists this script measured first (about 140 tokens)."""
    from sedi.config.seeds import load_seed_tasks
    from sedi.stages.prompts import completion_prompt

    tasks = load_seed_tasks(None)
    rng = random.Random(seed)
    return [completion_prompt(rng.sample(tasks, 6), style) for _ in range(count)]


def level(engine: Any, texts: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    """Run ``len(texts)`` requests with ``concurrency`` in flight; completion tokens per second."""
    todo = list(enumerate(texts))
    lock = threading.Lock()
    tokens: list[int] = []
    finishes: list[str] = []

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                index, prompt = todo.pop(0)
            result = engine.generate(
                prompt, max_tokens=max_tokens, temperature=1.0, top_p=0.9, stop=["Task 16", "\n\n\n"], seed=index
            )
            with lock:
                tokens.append(result.completion_tokens)
                finishes.append(result.finish_reason)

    stats = engine.scheduler.stats
    before = dataclasses.replace(stats)  # a snapshot: this level's figures are the differences
    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    steps = stats.steps - before.steps
    rows = stats.rows_decoded - before.rows_decoded
    decode_s = stats.decode_s - before.decode_s
    return {
        "tokens_per_s": round(sum(tokens) / seconds, 2),
        "seconds": round(seconds, 2),
        "tokens": sum(tokens),
        "length_finishes": finishes.count("length"),
        "mean_batch": round(rows / steps, 2) if steps else 0.0,
        # The engine thread's seconds in prompts (prefill) and in decoding steps (the rest of ``seconds`` is idle).
        "prefill_s": round(stats.prefill_s - before.prefill_s, 1),
        "decode_s": round(decode_s, 1),
        "mean_step_s": round(decode_s / steps, 3) if steps else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="Requests per concurrency level.")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--levels", default="1,4,8", help="Concurrency levels, comma-separated (1 first).")
    parser.add_argument("--style", default="self-instruct", choices=["self-instruct", "alpaca"], help="Prompt style.")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]

    import torch

    from sedi.serve import BUNDLED_MODEL_NAME, Engine

    engine = Engine.load(BUNDLED_MODEL_NAME, device=args.device, max_batch=max(levels))
    texts = prompts(args.requests, style=args.style)
    engine.generate(texts[0], max_tokens=4, temperature=0)  # warm-up: first-call allocations
    out: dict[str, Any] = {
        "model": BUNDLED_MODEL_NAME,
        "device": str(engine.device),
        "dtype": str(engine.model.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "style": args.style,
        "prompt_tokens_mean": round(sum(engine.count_tokens(t) for t in texts) / len(texts), 1),
    }
    for concurrency in levels:
        result = level(engine, texts, concurrency, args.max_tokens)
        for key, value in result.items():
            out[f"{key}_c{concurrency}"] = value
    for concurrency in levels[1:] if levels[0] == 1 else []:
        out[f"speedup_c{concurrency}"] = round(out[f"tokens_per_s_c{concurrency}"] / out["tokens_per_s_c1"], 2)
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)  # > cores: another process shared the CPU
    out["host"] = host_summary()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
