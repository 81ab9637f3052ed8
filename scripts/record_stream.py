"""Record a stream of the embedded teacher's generation responses to prompts that depend on no filter.

Prompt ``i`` is the default run's alpaca-style completion prompt showing ``--in-context`` human seed tasks
(the shipped 175 Self-Instruct seeds), drawn by ``random.Random(f"{seed}:{i}")``; the request carries the
default sampling settings (temperature 1.0, top_p 0.9, max_tokens 384, stops "Task 16" and three newlines) and
the run's per-request seed (``sedi.stages.generation.request_seed``); ``--presence-penalty`` and
``--frequency-penalty`` (default 0, as the run's) record the same prompts under other sampling settings, each in its
own file (every record names its penalties). Because no prompt shows a machine task, the
stream is the same whichever filter later judges it: ``scripts/bench_filter_replay.py`` replays it through the
Self-Instruct and the SeDi filters.

The bundled Gemma-3-270m is served by the real server (``sedi.teacher.endpoint.LocalTeacher``, batching up to
``--concurrency`` rows) and called with the real openai client, ``--concurrency`` requests in flight; with
``--base-url`` an already running OpenAI-compatible server is used instead (the tests' scripted teacher).

Each response is one JSON line (prompt index and seed, in-context seed ids, raw text, finish_reason, token
counts), appended to ``--out`` as its own gzip member the moment it arrives, so a killed recording loses at
most the responses in flight: a rerun reads the file, drops a torn last member, and asks only for the indices
it lacks. Prints one JSON line at the end.

    python scripts/record_stream.py --out /tmp/rec-stream/stream.jsonl.gz --n 1000 [--seed 0] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sedi.base.hardware import go_offline, host_summary

go_offline()  # before transformers is imported

STYLE = "alpaca"  # the default generation.prompt_style


def read_records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The complete records of a stream file, and whether a torn tail (killed mid-write) was dropped."""
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records, False
    torn = False
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        try:
            for line in handle:
                if not line.endswith("\n"):
                    torn = True
                    break
                records.append(json.loads(line))
        except (EOFError, OSError, zlib.error, json.JSONDecodeError):
            torn = True
    return records, torn


def rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` atomically with ``records`` (after a torn tail, so appends land on a valid file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as handle:
        for record in records:
            handle.write((json.dumps(record) + "\n").encode())
    os.replace(tmp, path)


def plan(index: int, seed: int, seeds: list[Any], in_context: int) -> tuple[list[Any], int]:
    """The in-context seed tasks and the request seed of prompt ``index``: a pure function of both seeds."""
    from sedi.stages.generation import request_seed

    rng = random.Random(f"{seed}:{index}")
    return rng.sample(seeds, in_context), request_seed(seed, index)


def local_teacher(concurrency: int, log_dir: Path) -> Any:
    from sedi.config.teacher import TeacherConfig
    from sedi.teacher.endpoint import LocalTeacher

    return LocalTeacher(TeacherConfig(concurrency=concurrency), log_dir)


def todo(done: set[int], n: int) -> Iterator[int]:
    return (i for i in range(n) if i not in done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Stream file (.jsonl.gz), appended to.")
    parser.add_argument("--n", type=int, default=1000, help="Responses the stream should hold in the end.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=16, help="Requests in flight (the server's batch).")
    parser.add_argument("--in-context", type=int, default=6, help="Human seed tasks per prompt (run default: 6).")
    parser.add_argument("--base-url", default=None, help="Use this running server instead of starting one.")
    parser.add_argument("--model", default="gemma-3-270m", help="Model name sent (what the server reports).")
    parser.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI presence penalty (run: 0).")
    parser.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI frequency penalty (run: 0).")
    args = parser.parse_args(argv)
    penalties = {"presence_penalty": args.presence_penalty, "frequency_penalty": args.frequency_penalty}
    if args.n < 1 or args.concurrency < 1 or not 1 <= args.in_context <= 175:
        print("record_stream.py: --n and --concurrency must be >= 1, --in-context 1..175", file=sys.stderr)
        return 2
    if not all(-2 <= value <= 2 for value in penalties.values()):
        print("record_stream.py: --presence-penalty and --frequency-penalty must be within -2..2", file=sys.stderr)
        return 2

    import openai

    from sedi.config.model import SamplingConfig
    from sedi.config.seeds import load_seed_tasks
    from sedi.stages.prompts import completion_prompt

    args.out.parent.mkdir(parents=True, exist_ok=True)
    records, torn = read_records(args.out)
    if torn:
        rewrite(args.out, records)
    mismatched = [r["index"] for r in records if r.get("stream_seed") != args.seed]
    if mismatched:
        print(
            f"{args.out}: holds responses of another --seed (index {mismatched[0]}): use a new --out", file=sys.stderr
        )
        return 2
    # records written before the penalties were recorded had none
    other = [r["index"] for r in records if any(r.get(k, 0.0) != v for k, v in penalties.items())]
    if other:
        print(f"{args.out}: holds responses of other penalties (index {other[0]}): use a new --out", file=sys.stderr)
        return 2
    done = {int(r["index"]) for r in records}
    pending = list(todo(done, args.n))
    seeds = load_seed_tasks(None)
    sampling = SamplingConfig()
    started = time.monotonic()
    lock = threading.Lock()
    totals = {"responses": 0, "completion_tokens": 0}
    teacher = None
    if pending and args.base_url is None:
        teacher = local_teacher(args.concurrency, args.out.parent / "logs")
        base_url = teacher.start().base_url
    else:
        base_url = args.base_url or ""
    client = openai.OpenAI(base_url=base_url, api_key="sedi-no-key", max_retries=5, timeout=3600.0)

    def one(index: int) -> None:
        examples, request_seed = plan(index, args.seed, seeds, args.in_context)
        completion = client.completions.create(
            model=args.model,
            prompt=completion_prompt(examples, STYLE),
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=list(sampling.stop),
            seed=request_seed,
            **penalties,
        )
        choice, usage = completion.choices[0], completion.usage
        record = {
            "index": index,
            "stream_seed": args.seed,
            "request_seed": request_seed,
            "in_context": [t.id for t in examples],
            "text": choice.text,
            "finish_reason": choice.finish_reason,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            **penalties,
        }
        line = (json.dumps(record) + "\n").encode()
        with lock:
            # one gzip member per response, synced: a kill tears at most the member being written
            with open(args.out, "ab") as raw:
                raw.write(gzip.compress(line))
                raw.flush()
                os.fsync(raw.fileno())
            totals["responses"] += 1
            totals["completion_tokens"] += record["completion_tokens"] or 0

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            futures = [pool.submit(one, i) for i in pending]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()  # what was recorded stays; a rerun asks for the rest
                raise
    finally:
        if teacher is not None:
            teacher.stop()
    seconds = time.monotonic() - started
    result = {
        "out": str(args.out),
        "n": args.n,
        "already_recorded": len(done),
        "torn_tail_dropped": torn,
        "recorded_now": totals["responses"],
        "completion_tokens_now": totals["completion_tokens"],
        "seconds": round(seconds, 1),
        "tokens_per_s": round(totals["completion_tokens"] / seconds, 2) if seconds else None,
        "concurrency": args.concurrency,
        **penalties,
        "host": host_summary(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
