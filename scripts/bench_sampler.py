"""The embedded teacher's sampler per row, on the bundled Gemma's own logits: each nucleus search side by side.

Takes the logits of the last ``--positions`` positions of ``--prompts`` default-run prompts (alpaca style, as
``scripts/bench_teacher.py --style alpaca`` builds them; teacher-forced, so real next-token distributions), then
draws one token per position with ``CategoricalSampler`` (temperature 1.0, top_p 0.9, the run's sampling) three
ways: its probability floor first (what the server does), the top-k first (the floor disabled), and the full
sort (floor and top-k disabled; a top-1 where that token alone holds ``top_p``). Prints one JSON line: milliseconds
per row for each (``--threads`` torch threads, best of ``--repeat`` passes), how often the floor and the top-k held
``top_p``, and whether all three drew the same tokens from the same random numbers.

    python scripts/bench_sampler.py [--prompts 3] [--positions 200] [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from sedi.base.hardware import go_offline

go_offline()  # before transformers is imported

SEARCHES = {"floor": {}, "top_k": {"floor": 2.0}, "full_sort": {"floor": 2.0, "candidates": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--positions", type=int, default=200, help="Last positions of each prompt.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    from sedi.config.seeds import load_seed_tasks
    from sedi.serve import BUNDLED_MODEL_NAME, Engine
    from sedi.serve._sampling import CategoricalSampler
    from sedi.stages.prompts import completion_prompt

    engine = Engine.load(BUNDLED_MODEL_NAME)
    tasks, rng = load_seed_tasks(None), random.Random(0)
    rows: list[torch.Tensor] = []
    for prompt in [completion_prompt(rng.sample(tasks, 6), "alpaca") for _ in range(args.prompts)]:
        ids = engine.tokenizer(prompt)["input_ids"]

        def forward(ids: list[int] = ids) -> torch.Tensor:
            with torch.inference_mode():
                ones = torch.ones(1, len(ids), dtype=torch.long)
                out = engine.model(input_ids=torch.tensor([ids]), attention_mask=ones)
            return out.logits[0, -args.positions :, :].float()

        rows.extend(engine._torch_thread.submit(forward).result())
    torch.set_num_threads(args.threads)
    probs = torch.stack(rows).softmax(-1)
    top = probs.sort(-1, descending=True).values
    result = {
        "positions": len(rows),
        "threads": args.threads,
        "floor_holds_top_p": round(float(((probs * (probs >= 1e-4)).sum(-1) >= 0.9001).float().mean()), 4),
        "top_1024_holds_top_p": round(float((top[:, :1024].sum(-1) >= 0.9).float().mean()), 4),
    }
    drawn = {}
    for name, options in SEARCHES.items():
        best = float("inf")
        for _ in range(args.repeat):
            sampler = CategoricalSampler(1.0, 0.9, torch.Generator().manual_seed(0), **options)  # type: ignore[arg-type]
            started = time.perf_counter()
            drawn[name] = [int(sampler.draw(row[None])[0, 0]) for row in rows]
            best = min(best, time.perf_counter() - started)
        result[f"ms_per_row_{name}"] = round(1000 * best / len(rows), 3)
    result["same_tokens"] = drawn["floor"] == drawn["top_k"] == drawn["full_sort"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
