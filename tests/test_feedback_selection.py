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
    demotions,
    loss_drop,
    promotions,
    select_attractive,
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
@given(steps=step_lists(), interval=st.integers(1, 12), selector=st.sampled_from(["grad_norm", "loss", "loss_drop"]))
def test_one_attractive_step_per_window_and_it_is_the_windows_max(
    steps: list[StepRecord], interval: int, selector: Selector
) -> None:
    chosen = select_attractive(list(reversed(steps)), interval, selector)  # input order must not matter
    drops = loss_drop(steps)
    windows = [steps[i : i + interval] for i in range(0, len(steps), interval)]
    scorable = [w for w in windows if any(signal(s, selector, drops) is not None for s in w)]
    assert len(chosen) == len(scorable)
    for pick, window in zip(chosen, scorable, strict=True):
        assert (pick.window_start, pick.window_end) == (window[0].step, window[-1].step)
        values = [(signal(s, selector, drops), s) for s in window]
        best = max(v for v, _ in values if v is not None)
        first_best = next(s for v, s in values if v == best)
        assert pick.value == best
        assert pick.step == first_best.step  # ties go to the earlier step
        assert pick.ids == first_best.ids
    assert chosen == select_attractive(steps, interval, selector)  # deterministic


def test_windows_and_the_partial_last_window() -> None:
    norms = [1.0, 5.0, 2.0, 7.0, 7.0, 0.5, 3.0]
    steps = [StepRecord(step=i + 1, grad_norm=g, loss=1.0, learning_rate=0.1, ids=[i]) for i, g in enumerate(norms)]
    picks = select_attractive(steps, 3)
    assert [(p.window_start, p.window_end, p.step, p.value, p.ids) for p in picks] == [
        (1, 3, 2, 5.0, [1]),
        (4, 6, 4, 7.0, [3]),
        (7, 7, 7, 3.0, [6]),
    ]
    with pytest.raises(ValueError, match="repeat"):
        select_attractive([*steps, steps[0]], 3)


def test_non_finite_signals_are_never_attractive() -> None:
    steps = [
        StepRecord(step=1, grad_norm=math.nan, loss=1.0, learning_rate=0.1, ids=[1]),
        StepRecord(step=2, grad_norm=math.inf, loss=1.0, learning_rate=0.1, ids=[2]),
        StepRecord(step=3, grad_norm=0.1, loss=1.0, learning_rate=0.1, ids=[3]),
    ]
    assert [p.step for p in select_attractive(steps, 10)] == [3]


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


def test_feedback_config_rejects_unknown_fields() -> None:
    assert FeedbackConfig().interval == 10
    with pytest.raises(ValueError, match="extra"):
        FeedbackConfig(intervall=5)  # type: ignore[call-arg]


def test_import_is_light_and_independent() -> None:
    code = (
        "import sys, feedback; heavy = {'torch', 'transformers', 'trl', 'peft', 'datasets', 'sedi', 'diversity'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
