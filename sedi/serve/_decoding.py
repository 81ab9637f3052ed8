"""Continuous decoding: concurrent requests decode together, one forward pass per token for all of them (the
server's decoding batch; not a training batch, nor the provider's Batch API).

On a CPU, decoding one token of Gemma-3-270m reads every weight (the 168M-parameter tied embedding
dominates), so a step costs nearly the same for one row as for several: measured on two cores in bf16,
a batch of 4 decoded 93.5 tokens/s, several times one request alone (docs/results.md, "The embedded
teacher's decoding speed", has the single-request rate). Requests queue here; a scheduler loop on the engine's one torch
thread admits them into the running batch between steps (each prefilled alone, then appended as a row of
the shared KV cache, see ``_kvcache``), decodes every row one token per forward pass, and hands a row back
as soon as it ends (EOS, a stop string, its max_tokens, or a cancel), so the others keep going and waiting
requests take the free places at once.

Each row keeps its own logits processors (penalties and a sampler drawing from its own seeded generator)
and its own stop strings; the forward pass is the only thing rows share. A row alone in the batch runs
exactly the computation of ``model.generate`` for one sequence, so a batch of one reproduces a seed bit
for bit. Rows batched with others see padding and other matrix shapes, which changes logits in their last
bits: in float32 that changed no greedy token (Gemma-3-270m, 8 rows of 48 tokens), in bf16 3 of those 8
rows took another near-tied token within their first tokens and then diverged. So a completion depends on
what it was batched with; reruns are reproducible through the client's response cache, not by re-decoding.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessor

from sedi.serve import _kvcache
from sedi.serve._sampling import CategoricalSampler

logger = logging.getLogger("sedi.serve")


class GenerationCancelled(Exception):
    """The request was cancelled (its client went away) before it finished."""


@dataclass(eq=False)
class Job:
    """One request as the scheduler sees it; its future resolves to the generated token ids."""

    prompt_ids: list[int]
    max_tokens: int
    processors: Sequence[LogitsProcessor]  # applied in order to the logits (penalties)
    stops: Sequence[str]
    cancel: threading.Event
    sampler: CategoricalSampler | None = None  # draws the token from the processed logits; None: their argmax
    future: Future[list[int]] = field(default_factory=Future)
    generated: list[int] = field(default_factory=list)


@dataclass
class _Batch:
    """The running rows, their shared cache and their left-padded attention mask (rows x columns)."""

    jobs: list[Job] = field(default_factory=list)
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None

    @property
    def columns(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])


@dataclass
class BatchStats:
    """Counters for tests and benchmarks (read them while the engine is idle)."""

    steps: int = 0
    rows_decoded: int = 0  # sum of batch sizes over steps: rows_decoded / steps is the mean batch
    largest_batch: int = 0
    finished: int = 0
    cancelled: int = 0
    # Seconds of the decoding thread in prefills (a joining request's prompt) and in decoding steps: on a CPU the
    # prompts' length can cost as much as the tokens written (docs/results.md, the host without native bf16).
    prefill_s: float = 0.0
    decode_s: float = 0.0


class Scheduler:
    """Owns the queue and the decoding loop; the loop runs on ``executor`` (one thread) only while busy."""

    def __init__(
        self,
        model: Any,
        device: torch.device,
        executor: Executor,
        is_done: Callable[[Job], bool],
        max_batch: int = 8,
        gather_s: float = 0.005,
    ) -> None:
        # gather_s: from idle, wait this long for requests sent together (a run's calls_per_round) so
        # that they start in the same step; later arrivals join between steps anyway.
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.device = device
        self.executor = executor
        self.is_done = is_done
        self.max_batch = max_batch
        self.gather_s = gather_s
        self.stats = BatchStats()
        # transformers 5.2x renamed the forward's past_key_values to cache (the old name warns).
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        # Held around every prefill and decoding step. A plain Lock is not fair: a scheduler that releases
        # and re-takes it in a loop can starve a waiter for hundreds of steps on a busy 2-core machine
        # (seen in CI), so whoever wants decoding frozen closes the gate first: see paused().
        self.step_lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._queue: deque[Job] = deque()
        self._wake = threading.Condition()
        self._running = False

    def submit(self, job: Job) -> None:
        with self._wake:
            self._queue.append(job)
            self._wake.notify()
            if not self._running:
                self._running = True
                self.executor.submit(self._loop)

    def queued(self) -> list[Job]:
        """The requests waiting for a place in the batch, oldest first (a snapshot)."""
        with self._wake:
            return list(self._queue)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze decoding between two steps (at most the step under way finishes first)."""
        self._gate.clear()
        try:
            with self.step_lock:
                yield
        finally:
            self._gate.set()

    def _loop(self) -> None:
        batch = _Batch()
        while True:
            self._gate.wait()
            with self._wake:
                if not batch.jobs and self._queue and self.gather_s > 0:
                    # Starting from idle: give requests sent together a moment to arrive together.
                    deadline = time.monotonic() + self.gather_s
                    while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                        self._wake.wait(left)
                if not batch.jobs and not self._queue:
                    self._running = False
                    return
            try:
                with self.step_lock, torch.inference_mode():
                    self._admit(batch)
                    if batch.jobs:
                        self._step(batch)
            except Exception as exc:  # a failed forward pass fails its rows, never the scheduler
                logger.exception("decoding failed for %d requests", len(batch.jobs))
                for job in batch.jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                batch = _Batch()

    def _next_job(self, batch: _Batch) -> Job | None:
        with self._wake:
            if len(batch.jobs) >= self.max_batch or not self._queue:
                return None
            return self._queue.popleft()

    def _admit(self, batch: _Batch) -> None:
        """Prefill waiting requests one by one and append them to the batch while it has room."""
        while (job := self._next_job(batch)) is not None:
            if job.cancel.is_set():
                self._finish(job, cancelled=True)
                continue
            started = time.perf_counter()
            try:
                cache = DynamicCache(config=self.model.config)
                input_ids = torch.tensor([job.prompt_ids], device=self.device)
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    use_cache=True,
                    logits_to_keep=1,
                    **{self._cache_kwarg: cache},
                )
                self._choose(job, out.logits[0, -1:, :], job.prompt_ids)
            except Exception as exc:  # this request alone fails (say, out of memory on a long prompt)
                logger.exception("prefill failed")
                job.future.set_exception(exc)
                continue
            finally:
                self.stats.prefill_s += time.perf_counter() - started
            if self.is_done(job):
                self._finish(job)
                continue
            if not _kvcache.can_merge(cache):
                # A cache this module cannot splice (see _kvcache): decode one request at a time.
                self.max_batch = 1
            self._join(batch, job, cache)

    def _join(self, batch: _Batch, job: Job, cache: DynamicCache) -> None:
        length = len(job.prompt_ids)
        row_mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if batch.cache is None or batch.mask is None:
            batch.jobs, batch.cache, batch.mask = [job], cache, row_mask
            return
        columns = max(batch.columns, length)
        _kvcache.pad_left(batch.cache, batch.columns, columns)
        _kvcache.pad_left(cache, length, columns)
        _kvcache.append_rows(batch.cache, cache)
        batch.mask = torch.cat([_pad_mask(batch.mask, columns), _pad_mask(row_mask, columns)])
        batch.jobs.append(job)

    def _step(self, batch: _Batch) -> None:
        """One forward pass for every row, then one token chosen per row with its own processors."""
        # Rows whose client left since the last step go before paying for another forward pass.
        live = [index for index, job in enumerate(batch.jobs) if not job.cancel.is_set()]
        if len(live) < len(batch.jobs):
            for job in batch.jobs:
                if job.cancel.is_set():
                    self._finish(job, cancelled=True)
            self._shrink(batch, live)
            if not batch.jobs:
                return
        assert batch.mask is not None
        started = time.perf_counter()
        rows = len(batch.jobs)
        self.stats.steps += 1
        self.stats.rows_decoded += rows
        self.stats.largest_batch = max(self.stats.largest_batch, rows)
        last = [job.generated[-1] for job in batch.jobs]
        # A row's next position is how many real tokens it has: its cache minus its own padding.
        positions = [len(job.prompt_ids) + len(job.generated) - 1 for job in batch.jobs]
        mask = torch.cat([batch.mask, batch.mask.new_ones((rows, 1))], dim=1)
        out = self.model(
            input_ids=torch.tensor([[token] for token in last], device=self.device),
            attention_mask=mask,
            position_ids=torch.tensor([[p] for p in positions], device=self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: batch.cache},
        )
        batch.mask = mask
        logits = out.logits[:, -1, :]
        for index, job in enumerate(batch.jobs):
            self._choose(job, logits[index : index + 1], job.prompt_ids + job.generated)
        keep = [index for index, job in enumerate(batch.jobs) if not self._leaves(job)]
        if len(keep) < rows:
            self._shrink(batch, keep)
        self.stats.decode_s += time.perf_counter() - started

    def _choose(self, job: Job, logits: torch.Tensor, ids: list[int]) -> None:
        # As model.generate: float32 scores, processors in order, then the sampler as its last processor (which
        # leaves only its drawn token finite for the argmax): here it hands the token over directly, which skips
        # a vocabulary-wide mask and argmax per row and step.
        scores = logits.to(dtype=torch.float32)
        if job.processors:
            input_ids = torch.tensor([ids], device=self.device)
            for processor in job.processors:
                scores = processor(input_ids, scores)
        token = scores.argmax(dim=-1) if job.sampler is None else job.sampler.draw(scores)[:, 0]
        job.generated.append(int(token[0]))

    def _leaves(self, job: Job) -> bool:
        if self.is_done(job):
            self._finish(job)
            return True
        return False

    def _shrink(self, batch: _Batch, keep: list[int]) -> None:
        if not keep:
            batch.jobs, batch.cache, batch.mask = [], None, None
            return
        assert batch.cache is not None and batch.mask is not None
        index = torch.tensor(keep, device=self.device)
        _kvcache.keep_rows(batch.cache, index)
        mask = batch.mask[index]
        # Columns that were padding for every remaining row cost attention for nothing: drop them.
        drop = int(mask.any(dim=0).long().argmax())
        _kvcache.trim_left(batch.cache, int(mask.shape[1]), drop)
        batch.jobs, batch.mask = [batch.jobs[i] for i in keep], mask[:, drop:]

    def _finish(self, job: Job, cancelled: bool = False) -> None:
        if cancelled:
            self.stats.cancelled += 1
            job.future.set_exception(GenerationCancelled("the request was cancelled"))
        else:
            self.stats.finished += 1
            job.future.set_result(job.generated)


def _pad_mask(mask: torch.Tensor, columns: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (columns - mask.shape[1], 0))
