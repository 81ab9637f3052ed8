"""Which generated tasks are kept: heuristics, decontamination, ROUGE-L and the embedding rule.

Kept apart from :mod:`sedi.config.model` so that each config module stays small; like it, this imports nothing
from the code it configures.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sedi.config.teacher import _Strict


class FilterConfig(_Strict):
    """Which generated tasks are kept."""

    rouge_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Reject a task whose instruction has ROUGE-L F1 above this against any earlier one (seeds, "
        "kept tasks, earlier tasks of the same round). Unset: 0.7 for method 'self-instruct' (the original), "
        "0.85 for method 'sedi' (the relaxed threshold).",
    )
    heuristics: Literal["self-instruct", "alpaca"] = Field(
        "self-instruct",
        description="Heuristic rule set: Self-Instruct's keyword list, or Alpaca's (adds video, audio, music, "
        "flowchart, diagram). Both drop instructions of 3 words or fewer or more than 150, those starting "
        "with 'Write a program', with punctuation or with a non-ASCII character.",
    )
    extra_keywords: list[str] = Field(
        default_factory=list, description="More words or phrases that reject an instruction containing them."
    )
    truncated: Literal["drop_last_item", "drop_response"] = Field(
        "drop_last_item",
        description="A response cut off by max_tokens: drop only its incomplete last task (Alpaca), or every "
        "task in it (the original Self-Instruct, which wastes paid output on long lists).",
    )

    # MiniLM puts genuine paraphrases of one task at 0.8-0.9 cosine, and distinct tasks on one topic there too;
    # method.md measured that a low threshold mostly removes again what the relaxed ROUGE-L kept. 0.95 removes
    # only near-verbatim rewordings; every run reports how many it removed beyond ROUGE-L (rule 'embedding').
    embedding_threshold: float | None = Field(
        0.95,
        ge=-1,
        le=1,
        description="method 'sedi' only: reject a task whose instruction embedding has cosine above this with "
        "any earlier one (null disables the rule). Ignored by 'self-instruct', which stays the faithful baseline.",
    )
    # sedi compare's relaxed-filter-only arm: method 'self-instruct' with this rule (and rouge_threshold 0.85)
    # measures what SeDi's relaxed filter alone is worth, without its batches, feedback or prompts.
    embedding_rule: Literal["sedi", "every-method"] = Field(
        "sedi",
        description="Which methods apply embedding_threshold: 'sedi' (method 'sedi' only; 'self-instruct' stays "
        "the faithful baseline) or 'every-method' (method 'self-instruct' too).",
    )
    embedding_model: str | None = Field(
        None,
        description="sentence-transformers model directory for embeddings. Unset: the bundled all-MiniLM-L6-v2.",
    )
    # 'auto' is exact below diversity.index.AUTO_EXACT_BELOW vectors and IVF past it (the measured crossover).
    embedding_index: Literal["auto", "exact", "hnsw", "ivf"] = Field(
        "auto",
        description="FAISS index of the embedding pool: 'auto' (exact, then IVF past the measured size), 'exact' "
        "(flat inner product, never misses a neighbour), 'hnsw' (graph) or 'ivf' (k-means; exact until trained).",
    )
    embedding_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Arithmetic of the encoder: 'auto' runs it under bf16 autocast where the device has native "
        "bf16 (faster on such CPUs, vectors nearly identical to float32's; measured in diversity/embeddings.py), "
        "else float32. Part of the embedding cache key.",
    )
    embedding_backend: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description="What runs the encoder: 'auto' is OpenVINO on a CPU (2-4x less CPU time than torch, same "
        "decisions; measured in diversity/_openvino.py) when it is installed and the model is transformer + mean "
        "pooling, else torch. Part of the embedding cache key.",
    )

    # A teacher that saw an evaluation set can hand its items back; kept, they would train the student on the
    # test and flatter the held-out loss, the quality guard of every comparison. On in every arm (baselines too):
    # it keeps the measurement honest rather than changing a method.
    decontaminate_heldout: bool = Field(
        True,
        description="Reject a candidate that copies a held-out task (all of seeds.heldout_path, not only the "
        "student.heldout_size evaluated): rule 'contaminated', the matched row recorded. Seeds that copy one are "
        "refused at start.",
    )
    decontaminate: list[str] = Field(
        default_factory=list,
        description="More evaluation files to decontaminate against, the same way: JSONL, CSV or a local folder "
        "that the datasets library loads, with 'instruction' and optional 'input' and 'output' fields.",
    )
    # 13-grams as large-model reports since GPT-3 use; shorter n flags common phrases in unrelated tasks.
    decontaminate_ngram: int = Field(
        13,
        ge=5,
        description="A candidate sharing one word n-gram of this length with an evaluation item copies it (also: "
        "the same prompt, or ROUGE-L of the prompts above 0.85).",
    )

    def threshold_for(self, method: str) -> float:
        if self.rouge_threshold is not None:
            return self.rouge_threshold
        return 0.7 if method == "self-instruct" else 0.85
