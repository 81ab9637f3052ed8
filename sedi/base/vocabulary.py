"""The run's shared vocabulary: what a request may cost or cost, what a teacher call returned or how it
ended, and the words the run database stores (verdicts, request kinds, round stages, run states, origins).
Plain dataclasses and aliases with no imports from the rest of sedi, so the store, the ledger and the teacher
client can all speak them without importing each other."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# What the filters decided about a candidate task (candidates.verdict; 'new' is only its value before that).
VerdictName = Literal["kept", "rejected", "pending"]
# What a planned teacher request asks for (requests.kind).
RequestKind = Literal["tasks", "classify", "instances", "repair"]
# The stages a round completes, in order (rounds.stage; see sedi.loop.STAGES).
RoundStage = Literal["filtered", "trained", "fed", "done"]
# Where a run stands (meta.state).
RunState = Literal["created", "running", "finished", "budget_exhausted", "interrupted", "failed"]
# Who wrote a seed in the pool (seed_pool.origin); a task file's tasks may also be held-out tasks.
SeedOrigin = Literal["human", "machine"]
TaskOrigin = SeedOrigin | Literal["heldout"]
# How one HTTP attempt stands in the ledger (calls.status). 'refused': no connection could be made, so nothing
# was sent: kept for the record, but not a call (no budget, no calls-per-kept figure counts it).
CallStatus = Literal["sent", "ok", "length", "error", "interrupted", "refused"]
# What the feedback stage did to a seed (seed_history.action).
SeedAction = Literal["promote", "demote"]

# The words above that queries name, as values: the store passes them as parameters, never spelled inside SQL.
UNJUDGED = "new"  # candidates.verdict before the filters decide (not a VerdictName: no stage ever returns it)
KEPT: VerdictName = "kept"
REJECTED: VerdictName = "rejected"
TASKS: RequestKind = "tasks"
INSTANCES: RequestKind = "instances"
REPAIR: RequestKind = "repair"
ROUND_DONE: RoundStage = "done"
HUMAN: SeedOrigin = "human"
MACHINE: SeedOrigin = "machine"
PROMOTE: SeedAction = "promote"
DEMOTE: SeedAction = "demote"
SENT: CallStatus = "sent"
OK: CallStatus = "ok"
INTERRUPTED: CallStatus = "interrupted"
REFUSED: CallStatus = "refused"  # never sent: every count of calls leaves these rows out
ERROR: CallStatus = "error"
FAILED_CALLS: tuple[CallStatus, ...] = (ERROR, INTERRUPTED)  # sedi status's failed_calls
LENGTH = "length"  # calls.status and responses.finish_reason of an answer cut at max_tokens

ProgressHook = Callable[[str, int, int], None]  # (stage, done, total)
EncodeFn = Callable[[Sequence[str]], Any]  # texts -> one embedding row each


@dataclass(frozen=True)
class Usage:
    """Calls, tokens and dollars: what a request may cost, or what was spent."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.calls + other.calls, self.tokens + other.tokens, self.cost_usd + other.cost_usd)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.calls - other.calls, self.tokens - other.tokens, self.cost_usd - other.cost_usd)


@dataclass(frozen=True)
class CachedResponse:
    """A teacher response as stored in the cache."""

    request_key: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class AttemptOutcome:
    """How one HTTP attempt ended, for its ledger row."""

    status: CallStatus
    http_status: int | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    charged: Usage = Usage()
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prompt cache
    latency_s: float | None = None
    error_class: str | None = None
    error: str | None = None
