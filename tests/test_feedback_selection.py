"""feedback.selection and feedback.signals.loss_drop: pure Python, property-tested with hypothesis."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback import (
    Attractive,
    FeedbackConfig,
    PoolEntry,
    StepRecord,
    decided_through,
    demotions,
    loss_drop,
    promotions,
    select_attractive,
    weak_seeds,
)
from feedback.selection import Selector

finite = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def step_lists(draw: st.DrawFn) -> list[StepRecord]:
    count = draw(st.integers(min_value=0, max_value=40))
    numbers = sorted(draw(st.sets(st.integers(min_value=1, max_value=500), min_size=count, max_size=count)))
    ids = draw(st.lists(st.lists(st.integers(0, 60), min_size=1, max_size=4), min_size=count, max_size=count))
    return [
        StepRecord(step=n, grad_norm=draw(finite), loss=draw(finite), learning_rate=1e-4, ids=batch)
        for n, batch in zip(numbers, ids, strict=True)
    ]


@st.composite
def pools(draw: st.DrawFn) -> list[PoolEntry]:
    ids = draw(st.lists(st.integers(0, 300), unique=True, max_size=40))
    entries = []
    for task in ids:
        total = draw(st.integers(0, 10))
        entries.append(
            PoolEntry(
                id=task,
                origin=draw(st.sampled_from(["human", "machine"])),
                added_round=draw(st.integers(0, 5)),
                offspring_total=total,
                offspring_rejected=draw(st.integers(0, total)),
                batch_grad_norms=draw(st.lists(finite, max_size=3)),
            )
        )
    return entries


def signal(step: StepRecord, selector: Selector, drops: dict[int, float]) -> float | None:
    if selector == "loss_drop":
        return drops.get(step.step)
    return step.grad_norm if selector == "grad_norm" else step.loss


@settings(max_examples=200, deadline=None)
@given(
    steps=step_lists(),
    interval=st.integers(1, 12),
    selector=st.sampled_from(["grad_norm", "loss", "loss_drop"]),
    final=st.booleans(),
)
def test_one_attractive_step_per_window_and_it_is_the_windows_max(
    steps: list[StepRecord], interval: int, selector: Selector, final: bool
) -> None:
    chosen = select_attractive(list(reversed(steps)), interval, selector, final=final)  # input order must not matter
    drops = loss_drop(steps)
    last = max((s.step for s in steps), default=0)
    # Windows 1..interval, interval+1..2*interval, ... by step number; the open one only when final.
    ends = range(interval, last + interval, interval)
    windows = [[s for s in steps if end - interval < s.step <= end] for end in ends if end <= last or final]
    scorable = [w for w in windows if any(signal(s, selector, drops) is not None for s in w)]
    assert len(chosen) == len(scorable)
    for pick, window in zip(chosen, scorable, strict=True):
        assert pick.window_start <= window[0].step and window[-1].step <= pick.window_end
        assert pick.window_end - pick.window_start < interval
        values = [(signal(s, selector, drops), s) for s in window]
        best = max(v for v, _ in values if v is not None)
        first_best = next(s for v, s in values if v == best)
        assert pick.value == best
        assert pick.step == first_best.step  # ties go to the earlier step
        assert pick.ids == first_best.ids
    assert chosen == select_attractive(steps, interval, selector, final=final)  # deterministic


def _steps(norms: list[float], first: int = 1) -> list[StepRecord]:
    return [
        StepRecord(step=first + i, grad_norm=g, loss=1.0, learning_rate=0.1, ids=[first + i])
        for i, g in enumerate(norms)
    ]


def test_windows_are_counted_over_the_run_not_per_round() -> None:
    """25 steps trained in rounds of 7, 9 and 9: windows 1-10 and 11-20 are decided as soon as they are complete,
    21-25 only when the run ends."""
    norms = [float((7 * i) % 11) for i in range(1, 26)]
    steps = _steps(norms)
    after, picks = 0, []
    for end in (7, 16, 25):  # the steps recorded after each round
        seen = [s for s in steps if s.step <= end]
        picks.append(select_attractive(seen, 10, after=after))
        after = decided_through(seen, 10, after=after)
    assert [len(p) for p in picks] == [0, 1, 1] and after == 20
    assert [(p.window_start, p.window_end) for p in picks[1] + picks[2]] == [(1, 10), (11, 20)]
    for pick in picks[1] + picks[2]:
        window = norms[pick.window_start - 1 : pick.window_end]
        assert pick.value == max(window) and pick.step == pick.window_start + window.index(max(window))
    last = select_attractive(steps, 10, after=after, final=True)
    assert [(p.window_start, p.window_end) for p in last] == [(21, 25)]
    assert decided_through(steps, 10, after=after, final=True) == 25
    assert select_attractive(steps, 10, after=25, final=True) == []  # settled once
    # the same steps seen all at once decide exactly the same windows
    assert select_attractive(steps, 10, final=True) == picks[1] + picks[2] + last


def test_windows_and_the_partial_last_window() -> None:
    steps = _steps([1.0, 5.0, 2.0, 7.0, 7.0, 0.5, 3.0])
    picks = select_attractive(steps, 3)
    assert [(p.window_start, p.window_end, p.step, p.value, p.ids) for p in picks] == [
        (1, 3, 2, 5.0, [2]),
        (4, 6, 4, 7.0, [4]),
    ]
    final = select_attractive(steps, 3, after=6, final=True)
    assert [(p.window_start, p.window_end, p.step) for p in final] == [(7, 7, 7)]
    with pytest.raises(ValueError, match="repeat"):
        select_attractive([*steps, steps[0]], 3)


def test_non_finite_signals_are_never_attractive() -> None:
    steps = [
        StepRecord(step=1, grad_norm=math.nan, loss=1.0, learning_rate=0.1, ids=[1]),
        StepRecord(step=2, grad_norm=math.inf, loss=1.0, learning_rate=0.1, ids=[2]),
        StepRecord(step=3, grad_norm=0.1, loss=1.0, learning_rate=0.1, ids=[3]),
    ]
    assert [p.step for p in select_attractive(steps, 10, final=True)] == [3]


def test_loss_drop_definition() -> None:
    losses = [3.0, 2.5, 2.7, 2.0]
    steps = [StepRecord(step=i + 1, grad_norm=1.0, loss=v, learning_rate=0.1, ids=[i]) for i, v in enumerate(losses)]
    assert loss_drop(steps) == pytest.approx({1: 0.5, 2: -0.2, 3: 0.7})


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=6), max_size=6),
    machine=st.sets(st.integers(0, 30)),
    losses=st.dictionaries(st.integers(0, 30), finite),
    top_k=st.integers(1, 4),
)
def test_promotions_are_machine_tasks_of_attractive_batches_each_once(
    picks: list[list[int]], machine: set[int], losses: dict[int, float], top_k: int
) -> None:
    attractive = [
        Attractive(window_start=10 * i + 1, window_end=10 * i + 10, step=10 * i + 3, value=1.0, ids=ids)
        for i, ids in enumerate(picks)
    ]
    for mode in ("all", "top_k"):
        promoted = promotions(attractive, machine, losses, mode, top_k)
        ids = [p.id for p in promoted]
        assert set(ids) <= machine
        assert len(ids) == len(set(ids))
        assert all(p.reason for p in promoted)
        for pick in attractive:
            mine = [p for p in promoted if p.step == pick.step]
            assert {p.id for p in mine} <= set(pick.ids)
            if mode == "top_k":
                assert len(mine) <= top_k
                assert [p.value for p in mine] == sorted((p.value for p in mine), reverse=True)
                assert all(p.value == losses[p.id] for p in mine)
        if mode == "all":
            every = {i for ids in picks for i in ids if i in machine}
            assert set(ids) == every


def test_top_k_needs_losses_and_ranks_by_loss() -> None:
    pick = Attractive(window_start=1, window_end=10, step=4, value=2.0, ids=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="per_example_loss"):
        promotions([pick], {1, 2}, None, "top_k", 1)
    losses = {1: 0.5, 2: 3.0, 3: 3.0, 4: 9.0, 5: 1.0}
    promoted = promotions([pick], {1, 2, 3, 5}, losses, "top_k", 2)
    assert [(p.id, p.value) for p in promoted] == [(2, 3.0), (3, 3.0)]  # 4 is human; tie broken by id


@settings(max_examples=300, deadline=None)
@given(pool=pools(), cap=st.integers(0, 45), protect=st.booleans())
def test_demotions_keep_the_cap_and_protect_human_seeds(pool: list[PoolEntry], cap: int, protect: bool) -> None:
    out = demotions(pool, cap, protect)
    removed = {d.id for d in out}
    assert len(removed) == len(out)
    assert removed <= {e.id for e in pool}
    humans = [e for e in pool if e.origin == "human"]
    if protect:
        assert not removed & {e.id for e in humans}
        # Down to the cap, unless the protected human seeds alone exceed it.
        assert len(pool) - len(out) == (len(pool) if len(pool) <= cap else max(cap, len(humans)))
    else:
        assert len(pool) - len(out) == min(len(pool), cap)
    # Machine seeds always go before human ones.
    origins = [next(e.origin for e in pool if e.id == d.id) for d in out]
    assert origins == sorted(origins, key=lambda o: o != "machine")
    assert all(d.reason for d in out)
    assert out == demotions(list(reversed(pool)), cap, protect)  # deterministic, whatever the pool's order


def test_demotion_order_rate_then_grad_norm_then_id() -> None:
    pool = [
        PoolEntry(id=1, origin="human", offspring_total=10, offspring_rejected=10),
        PoolEntry(id=2, origin="machine", offspring_total=4, offspring_rejected=1, batch_grad_norms=[5.0]),
        PoolEntry(id=3, origin="machine", offspring_total=4, offspring_rejected=3, batch_grad_norms=[9.0]),
        PoolEntry(id=4, origin="machine", offspring_total=4, offspring_rejected=1, batch_grad_norms=[1.0, 2.0]),
        PoolEntry(id=5, origin="machine", offspring_total=0, offspring_rejected=0),
        PoolEntry(id=6, origin="machine", offspring_total=4, offspring_rejected=1, batch_grad_norms=[1.5]),
    ]
    out = demotions(pool, 2, protect_human=True)
    assert [d.id for d in out] == [3, 4, 6, 2]  # 5 has no record against it: kept
    assert out[0].value == 0.75 and out[1].mean_grad_norm == 1.5
    assert "rejection rate 0.75 (3/4)" in out[0].reason
    unprotected = demotions(pool, 0, protect_human=False)
    assert [d.id for d in unprotected] == [3, 4, 6, 2, 5, 1]
    assert demotions(pool, 6) == []


def _judged(i: int, origin: str, signal: float | None, judged: int) -> PoolEntry:
    return PoolEntry(id=i, origin=origin, offspring_signal=signal, offspring_judged=judged)  # type: ignore[arg-type]


def test_weak_seeds_leave_below_the_pools_mean_machine_first() -> None:
    pool = [
        _judged(1, "human", 0.0, 20),  # the weakest, but protected
        _judged(2, "machine", 0.2, 10),
        _judged(3, "machine", 0.1, 10),
        _judged(4, "machine", 0.05, 3),  # too little evidence
        _judged(5, "machine", 1.5, 10),  # above the mean: stays
        _judged(6, "human", 0.9, 10),
        _judged(7, "machine", None, 0),
    ]
    out = weak_seeds(pool, 2, min_evidence=8)
    assert [d.id for d in out] == [3, 2]
    assert out[0].value == 0.1 and "10 offspring" in out[0].reason and "pool mean" in out[0].reason
    assert [d.id for d in weak_seeds(pool, 1, min_evidence=8)] == [3]
    # unprotected human seeds go only after every eligible machine seed
    assert [d.id for d in weak_seeds(pool, 5, min_evidence=8, protect_human=False)] == [3, 2, 1]
    assert weak_seeds(pool, 0, min_evidence=8) == []
    alike = [_judged(i, "machine", 0.4, 10) for i in range(4)]
    assert weak_seeds(alike, 3, min_evidence=8) == []  # nobody is below the mean


def test_feedback_config_rejects_unknown_fields() -> None:
    assert FeedbackConfig().interval == 10
    with pytest.raises(ValueError, match="extra"):
        FeedbackConfig(intervall=5)  # type: ignore[call-arg]


@pytest.mark.slow
def test_import_is_light_and_independent() -> None:
    code = (
        "import sys, feedback; heavy = {'torch', 'transformers', 'trl', 'peft', 'datasets', 'sedi', 'diversity'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
