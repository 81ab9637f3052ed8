"""One transformers causal LM with OpenAI sampling semantics; concurrent requests decode in one batch.

The HTTP layer (``_app.py``) only validates and formats; everything that decides which tokens come out
lives here so that it can be used and tested without a server.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from sedi.base.hardware import cpu_has_native_bf16
from sedi.exceptions import ConfigError
from sedi.serve._bundled import BUNDLED_MODEL_NAME, bundled_model_dir
from sedi.serve._decoding import GenerationCancelled, Job, Scheduler
from sedi.serve._sampling import CategoricalSampler, OpenAIPenalties

__all__ = ["Engine", "GenerationCancelled", "GenerationResult", "InvalidRequest"]

FinishReason = Literal["stop", "length"]
Messages = Sequence[Mapping[str, Any]]

DEFAULT_MAX_BATCH = 8
"""Rows decoded together. With bf16 Gemma-3-270m on two (shared) cores, 8 concurrent requests decode several
times the tokens/s of one at a time (scripts/bench_teacher.py; the figures are in docs/results.md, "The embedded
teacher server"); more rows add prefill stalls and cache copies. On a GPU a larger batch pays off; pass
``max_batch``."""


class InvalidRequest(ValueError):
    """A request this model cannot serve as asked (the HTTP layer answers 400 with this message)."""


@dataclass(frozen=True)
class GenerationResult:
    """One completion; token counts use the served model's own tokenizer."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


TeacherDtype = Literal["auto", "float32", "bfloat16"]


def _pick_device(device: str, dtype: TeacherDtype = "auto") -> tuple[torch.device, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if dtype != "auto":
        return resolved, getattr(torch, dtype)
    if resolved.type == "cuda":
        return resolved, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # On a CPU with native bf16, bf16 weights decode Gemma-3-270m much faster than float32 (measured: docs/results.md,
    # "The embedded teacher server"): decoding reads every weight per token, and its 168M-parameter tied
    # embedding dominates. Gemma was trained in bf16. Elsewhere bf16 is emulated and slower: float32.
    return resolved, torch.bfloat16 if cpu_has_native_bf16() else torch.float32


class Engine:
    """A loaded model and tokenizer; :meth:`generate` is thread-safe, and concurrent calls decode together
    in one batch of up to ``max_batch`` rows (see ``_decoding``)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        model_id: str,
        device: torch.device,
        torch_thread: ThreadPoolExecutor | None = None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        gather_s: float = 0.005,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.has_chat_template: bool = bool(getattr(tokenizer, "chat_template", None))
        # Every torch call runs on this one thread. Measured on 2 cores: once a second thread has run
        # torch ops, OpenMP keeps a thread team per calling thread and decoding drops from about 16 to
        # 10 tokens/s; FastAPI's thread pool would spread requests over many threads. Engine.load
        # loads the model on the same thread for the same reason, and the batching scheduler decodes there.
        self._torch_thread = torch_thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="sedi-torch")
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids: set[int] = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # A clean generation config: a checkpoint's own defaults (top_k, repetition_penalty, ...) must not
        # leak into anything that still calls model.generate on this model.
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=sorted(self.eos_token_ids) or None,
            pad_token_id=pad,
        )
        self.context_length: int | None = getattr(model.config, "max_position_embeddings", None)
        self.scheduler = Scheduler(model, device, self._torch_thread, self._is_done, max_batch, gather_s)

    @classmethod
    def load(
        cls,
        model: str,
        model_id: str | None = None,
        device: str = "auto",
        dtype: TeacherDtype = "auto",
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> Engine:
        """Load ``"gemma-3-270m"`` (the bundled default) or a local transformers model directory; ``dtype``
        ``"auto"`` is bf16 on CUDA (fp16 without bf16) and on CPUs with native bf16, else float32.
        ``max_batch`` bounds how many requests decode together."""
        if model == BUNDLED_MODEL_NAME:
            path = bundled_model_dir()
            default_id = BUNDLED_MODEL_NAME
        else:
            path = Path(model).expanduser()
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"teacher model {model!r} is neither {BUNDLED_MODEL_NAME!r} nor a local directory with a "
                    "transformers model (config.json, weights and tokenizer files); pass one of those"
                )
            default_id = path.resolve().name
        torch_device, torch_dtype = _pick_device(device, dtype)
        torch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sedi-torch")

        def load_on_torch_thread() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # device_map puts the weights straight onto the device instead of loading on CPU and copying.
            lm = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, device_map=str(torch_device), local_files_only=True
            )
            lm.eval()
            return lm, tokenizer

        lm, tokenizer = torch_thread.submit(load_on_torch_thread).result()
        return cls(lm, tokenizer, model_id or default_id, torch_device, torch_thread, max_batch=max_batch)

    def count_tokens(self, prompt_or_messages: str | Messages) -> int:
        """How many prompt tokens a request would cost, as :meth:`generate` counts them."""
        return len(self._encode(prompt_or_messages))

    def _encode(self, prompt_or_messages: str | Messages) -> list[int]:
        if isinstance(prompt_or_messages, str):
            # Plain prompts get the tokenizer's special tokens (Gemma's <bos>), as in pre-training.
            return list(self.tokenizer(prompt_or_messages)["input_ids"])
        if not self.has_chat_template:
            raise InvalidRequest(f"model {self.model_id!r} has no chat template")
        text = self.tokenizer.apply_chat_template(
            [dict(message) for message in prompt_or_messages], add_generation_prompt=True, tokenize=False
        )
        # The template already writes any <bos>; adding special tokens again would double it.
        return list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def generate(
        self,
        prompt_or_messages: str | Messages,
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Complete a prompt (str) or a chat (messages). ``temperature == 0`` means greedy decoding.

        Raises :class:`InvalidRequest` for requests the model cannot serve (empty prompt, context
        overflow, chat without a template); the HTTP layer turns those into 400 responses. Setting
        ``cancel`` drops the request from the batch at the next step and raises :class:`GenerationCancelled`.
        """
        if max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise InvalidRequest(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
        prompt_ids = self._encode(prompt_or_messages)
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty")
        if self.context_length is not None and len(prompt_ids) + max_tokens > self.context_length:
            raise InvalidRequest(
                f"this model's maximum context length is {self.context_length} tokens, but the prompt has "
                f"{len(prompt_ids)} tokens and max_tokens is {max_tokens}; shorten the prompt or lower max_tokens"
            )
        # Empty stop strings would match everywhere; OpenAI ignores them too.
        stops = [s for s in ([stop] if isinstance(stop, str) else (stop or [])) if s]
        prompt_length = len(prompt_ids)

        # Penalties act on raw logits, then temperature and nucleus: the order OpenAI documents. Without a
        # sampler (temperature 0) the scheduler takes the argmax.
        processors: list[LogitsProcessor] = []
        if presence_penalty or frequency_penalty:
            processors.append(OpenAIPenalties(prompt_length, presence_penalty, frequency_penalty))
        sampler = None
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            # Without a seed, draw one: a fresh generator per request shares no state with any other.
            # Any int is a valid OpenAI seed; torch takes 64 bits.
            generator.manual_seed(secrets.randbits(64) if seed is None else seed & 0xFFFF_FFFF_FFFF_FFFF)
            sampler = CategoricalSampler(temperature, top_p, generator)
        job = Job(prompt_ids, max_tokens, processors, stops, cancel or threading.Event(), sampler)
        self.scheduler.submit(job)
        new_ids = job.future.result()  # raises GenerationCancelled, or what decoding raised
        finish_reason: FinishReason = "length"
        for index, token in enumerate(new_ids):
            if token in self.eos_token_ids:
                new_ids, finish_reason = new_ids[: index + 1], "stop"
                break
        text = cast(str, self.tokenizer.decode(new_ids, skip_special_tokens=True))  # one sequence: one str
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text, finish_reason = text[:cut], "stop"
        return GenerationResult(text, finish_reason, prompt_length, len(new_ids))

    def _is_done(self, job: Job) -> bool:
        """Whether a row ends after its latest token: EOS, its token limit, or a stop string in its text."""
        if job.generated[-1] in self.eos_token_ids or len(job.generated) >= job.max_tokens:
            return True
        if not job.stops:
            return False
        # Decoding the whole completion each step is quadratic, but a few hundred tokens decode in well
        # under a millisecond, far below one forward pass; a stop string may span tokens.
        text = self.tokenizer.decode(job.generated, skip_special_tokens=True)
        return any(stop in text for stop in job.stops)
