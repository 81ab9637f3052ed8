"""OpenAI sampling semantics as transformers logits processors (stop strings: ``Engine._is_done``).

Why not transformers' own sampling: on a CPU with Gemma's 262k-token vocabulary, its nucleus filter
(a full sort) and ``torch.multinomial`` cost about 35 ms per token, half of a 270M model's forward
pass. :class:`CategoricalSampler` does the same job in about 2 ms, and draws from a per-request
generator, so seeds are reproducible without touching torch's global RNG.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's presence and frequency penalties over the tokens generated so far in this completion.

    ``logits[t] -= presence * (count[t] > 0) + frequency * count[t]``. Unlike transformers'
    ``RepetitionPenaltyLogitsProcessor`` (multiplicative, and over the prompt too), this is what the
    OpenAI API documents, so a teacher configured for OpenAI behaves the same against this server.
    """

    def __init__(self, prompt_length: int, presence_penalty: float, frequency_penalty: float) -> None:
        self.prompt_length = prompt_length
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        counts = torch.zeros(scores.shape, dtype=scores.dtype, device=scores.device)
        counts.scatter_add_(1, generated, torch.ones(generated.shape, dtype=scores.dtype, device=scores.device))
        penalty = self.presence_penalty * (counts > 0).to(scores.dtype) + self.frequency_penalty * counts
        return scores - penalty  # type: ignore[return-value]


class CategoricalSampler(LogitsProcessor):
    """Draws the next token (temperature, then nucleus ``top_p``) and leaves only it selectable.

    Used as the last processor before an argmax (the batching scheduler's, or a greedy ``model.generate``),
    which then picks the drawn token. The
    nucleus is searched among the ``candidates`` most likely tokens (a cheap top-k), falling back to
    a full sort only when they hold less than ``top_p`` of the mass; the draw is an inverse-CDF
    lookup. Both give exactly the distribution of transformers' ``TopPLogitsWarper`` + multinomial.
    """

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator, candidates: int = 1024) -> None:
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
        self.temperature = temperature
        self.top_p = top_p
        self.generator = generator
        self.candidates = candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = (scores.float() / self.temperature).softmax(dim=-1)
        ids: torch.Tensor | None = None
        if self.top_p < 1.0:
            top, ids = probs.topk(min(self.candidates, probs.shape[-1]), dim=-1)
            if bool((top.sum(dim=-1) < self.top_p).any()):
                top, ids = probs.sort(dim=-1, descending=True)
            # Keep a token while the mass of the tokens ranked above it is still below top_p.
            probs = top * ((top.cumsum(dim=-1) - top) < self.top_p)
        cdf = probs.cumsum(dim=-1, dtype=torch.float64)
        draw = torch.rand(
            (cdf.shape[0], 1), generator=self.generator, dtype=torch.float64, device=self.generator.device
        )
        # right=True: the first index whose cumulative mass exceeds the draw, never a zero-mass token.
        picked = torch.searchsorted(cdf, draw.to(cdf.device) * cdf[:, -1:], right=True)
        picked = picked.clamp_(max=cdf.shape[-1] - 1)
        token = picked if ids is None else ids.gather(-1, picked)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(-1, token, 0.0)  # type: ignore[return-value]
