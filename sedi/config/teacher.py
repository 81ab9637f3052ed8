"""The config of the teacher and of the money it may spend: which API, its prices, and the hard caps.

Part of the one config tree (:mod:`sedi.config.model` assembles it); kept apart because these are the keys a paying
user reads first, and the checks on them (finite numbers, a variable name rather than a key) guard the budget.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# OpenAI's Batch API bills half the synchronous price (its pricing page); the ledger and the budget apply it to
# the requests sent in batch jobs.
BATCH_API_DISCOUNT_DEFAULT = 0.5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Prices(_Strict):
    """Teacher prices in USD per million tokens, used for cost accounting and ``budget.max_cost_usd``."""

    # Finite and bounded: an infinite or NaN price would make every cost comparison meaningless.
    prompt: float = Field(
        0.0, ge=0, le=1_000_000, allow_inf_nan=False, description="USD per million prompt (input) tokens."
    )
    completion: float = Field(
        0.0, ge=0, le=1_000_000, allow_inf_nan=False, description="USD per million completion (output) tokens."
    )
    cached_prompt: float | None = Field(
        None,
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        description="USD per million cached prompt tokens (usage.prompt_tokens_details.cached_tokens), at most "
        "teacher.prices.prompt. Unset: cached tokens cost the prompt rate. The budget always reserves the full "
        "prompt rate (a cache hit is only known from the answer).",
    )
    batch_api_discount: float = Field(
        BATCH_API_DISCOUNT_DEFAULT,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Share of every price taken off for requests sent through the Batch API (teacher.batch_api): "
        "0.5, OpenAI's batch pricing, charges them half. Their reservation and their ledger cost use the "
        "discounted prices.",
    )

    @model_validator(mode="after")
    def _cached_not_dearer(self) -> Prices:
        # The worst case reserved before a request prices every prompt token at the prompt rate; a dearer cached
        # rate would let an answer cost more than its reservation.
        if self.cached_prompt is not None and self.cached_prompt > self.prompt:
            raise ValueError(
                f"teacher.prices.cached_prompt ({self.cached_prompt}) is above teacher.prices.prompt ({self.prompt}): "
                "a cached prompt token costs at most a prompt token; fix the prices"
            )
        return self


class LocalTeacherConfig(_Strict):
    """How ``teacher.provider: local`` starts the embedded teacher server."""

    model: str = Field(
        "gemma-3-270m",
        description="Model the local server loads: 'gemma-3-270m' (bundled, converted once into SEDI_CACHE) "
        "or a directory holding a transformers model and tokenizer.",
    )
    startup_timeout_s: float = Field(
        900.0,
        gt=0,
        description="Seconds to wait for the local server to answer. The first start converts the bundled "
        "GGUF (about a minute on 2 cores); later starts take seconds.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the local teacher runs: 'auto' picks CUDA when available, else CPU."
    )
    # bf16 weights decode the bundled Gemma-3-270m faster than float32 on a CPU with native bf16 (measured:
    # docs/results.md, "The embedded teacher's decoding speed"; why: sedi/serve/_engine.py).
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights of the local teacher: 'auto' is bf16 on CUDA (fp16 without bf16 support) and on "
        "CPUs with native bf16 (AVX512-BF16 or AMX), else float32.",
    )


class TeacherConfig(_Strict):
    """The teacher LLM behind an OpenAI-compatible API."""

    provider: Literal["openai", "local"] = Field(
        "local",
        description="'local' starts the embedded teacher server on a free loopback port for the run; "
        "'openai' talks to any OpenAI-compatible API at teacher.base_url.",
    )
    base_url: str | None = Field(
        None,
        description="API base URL, e.g. https://api.openai.com/v1. Unset: $OPENAI_BASE_URL, else OpenAI's. "
        "Ignored with provider 'local'.",
    )
    base_urls: list[str] | None = Field(
        None,
        min_length=1,
        description="Instead of base_url: several servers serving the same model (e.g. one vLLM per GPU), each "
        "attempt sent to the one with the fewest requests in flight; one that refuses connections, times out or "
        "answers 5xx repeatedly is set aside for a while and its requests retried on another. Each gets the key "
        "of teacher.api_key_env. Provider 'openai' only.",
    )
    model: str = Field(
        "gemma-3-270m",
        description="Model name sent with every request; part of the cache key. With provider 'local' it "
        "must match what the local server reports (its teacher.local.model id).",
    )
    mode: Literal["chat", "completion"] = Field(
        "completion",
        description="'completion' sends a plain prompt to /completions (base models, as the original "
        "Self-Instruct); 'chat' sends messages to /chat/completions (instruction-tuned models).",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key. The key itself is never "
        "written anywhere by sedi (nor echoed back by a provider: it is replaced by ***). Not needed for a loopback "
        "base_url (host 127.0.0.0/8, ::1 or 'localhost', never a name that looks so) or provider 'local'. User-info "
        "in a base URL (http://user:pass@host/v1) is sent as HTTP Basic auth instead of the key, and written nowhere.",
    )
    concurrency: int = Field(4, ge=1, le=1024, description="Requests in flight at once.")
    rpm: int | None = Field(
        None,
        ge=1,
        description="Requests per minute the provider allows: a request waits before it leaves until fewer than "
        "this many were sent in the last minute (failed attempts count). Unset: no client-side limit; the "
        "provider's x-ratelimit-* headers are honoured either way.",
    )
    tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens per minute the provider allows, each request counted as the worst case the budget "
        "reserves (prompt bound plus max_tokens): a request waits until it fits in the last minute's tokens. "
        "Unset: no client-side limit.",
    )
    # Waits are finite and bounded so that a typo (or .inf) cannot park a run forever while it holds budget.
    timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds before one HTTP attempt times out (then retried); at most 3600.",
    )
    max_retries: int = Field(
        4,
        ge=0,
        le=20,
        description="Retries per request on 429, 5xx, timeouts, connection errors and malformed responses. "
        "Every attempt is a ledger row and counts against budget.max_calls.",
    )
    backoff_base_s: float = Field(
        0.5,
        ge=0,
        le=600,
        allow_inf_nan=False,
        description="First retry waits up to this long; doubles per retry (full jitter); at most 600.",
    )
    backoff_max_s: float = Field(
        30.0, ge=0, le=3600, allow_inf_nan=False, description="Upper bound of one backoff wait; at most 3600."
    )
    prices: Prices | None = Field(
        None,
        description="Per-million-token prices for cost accounting. Required when budget.max_cost_usd is set, and "
        "for provider 'openai' at a non-loopback base_url unless teacher.free is true. Without prices the "
        "cost is reported as unknown, never as $0; a call whose usage is not reported is charged and reported "
        "at its worst case, so the cost then reads 'at most $X' (sedi status: cost_upper_bound true).",
    )
    free: bool = Field(
        False,
        description="State that the teacher costs nothing (e.g. a self-hosted server on another machine): then "
        "provider 'openai' at a non-loopback base_url runs without teacher.prices and reports $0. Not "
        "needed for provider 'local' or a loopback base_url; cannot be combined with teacher.prices.",
    )
    batch_api: bool = Field(
        False,
        description="Send each round's requests as one OpenAI Batch API job (POST /v1/files, /v1/batches; "
        "completion window 24h, billed at teacher.prices.batch_api_discount) instead of one HTTP call each; the job "
        "is polled until it ends, and a killed run resumes the same job. Answers may take up to 24 hours. "
        "Needs provider 'openai' with an endpoint that implements /v1/batches.",
    )
    batch_api_poll_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds between two status checks of a running batch job (teacher.batch_api); at most 3600.",
    )
    local: LocalTeacherConfig = Field(
        default_factory=LocalTeacherConfig, description="Settings of the embedded local teacher server."
    )

    @model_validator(mode="before")
    @classmethod
    def _key_env_is_a_name(cls, data: Any) -> Any:
        # Checked on the whole section, not the field: a field error would echo the value, and the value
        # is often an API key pasted by mistake. The message never includes it.
        name = data.get("api_key_env") if isinstance(data, dict) else None
        if isinstance(name, str) and not _ENV_NAME.fullmatch(name):
            raise ValueError(
                "teacher.api_key_env must be the NAME of an environment variable (letters, digits, underscores), "
                "not the key itself: export the key, e.g. OPENAI_API_KEY=..., and set teacher.api_key_env to "
                "that name"
            )
        return data

    @model_validator(mode="after")
    def _free_or_priced(self) -> TeacherConfig:
        if self.free and self.prices is not None:
            raise ValueError(
                "teacher.free is true but teacher.prices is set: keep teacher.prices for a paid teacher, or "
                "remove it for a free one"
            )
        return self

    @model_validator(mode="after")
    def _batch_needs_openai(self) -> TeacherConfig:
        if self.batch_api and self.provider == "local":
            raise ValueError(
                "teacher.batch_api is true but teacher.provider is 'local': the embedded teacher has no Batch API "
                "(/v1/batches); set teacher.batch_api: false, or use provider 'openai' with an endpoint that has one"
            )
        return self

    @model_validator(mode="after")
    def _one_kind_of_url(self) -> TeacherConfig:
        if self.base_urls is None:
            return self
        if self.base_url is not None:
            raise ValueError("teacher.base_url and teacher.base_urls are both set: keep one of them")
        if self.provider == "local":
            raise ValueError(
                "teacher.base_urls is set but teacher.provider is 'local': set provider 'openai' to use your servers"
            )
        if self.batch_api and len(self.base_urls) > 1:
            raise ValueError(
                "teacher.batch_api sends jobs to one provider endpoint, but teacher.base_urls lists several: keep one "
                "URL, or set teacher.batch_api: false"
            )
        return self


class BudgetConfig(_Strict):
    """Hard caps. A request whose worst case could exceed any cap is never sent; unset means no cap."""

    max_calls: int | None = Field(
        200,
        ge=0,
        description="Most HTTP attempts (failed attempts and retries included). The default is a safety net "
        "against an unintended large spend: raise it (or set null) for real runs.",
    )
    max_tokens: int | None = Field(
        None,
        ge=0,
        description="Most prompt + completion tokens. Before sending, a request reserves an upper bound of "
        "its prompt tokens (UTF-8 bytes plus overhead) plus sampling.max_tokens.",
    )
    max_cost_usd: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Most spend in USD, computed from teacher.prices."
    )
