"""Which tasks each generation prompt shows: the in-context picker of a round, and what it is measured by.

- ``method: self-instruct``: Self-Instruct's split (human seeds and earlier kept tasks), as published.
- ``method: sedi``: a subset of the whole active seed pool (``feedback.in_context: pool``, the method as
  stated) or the split over the pool's human and promoted seeds (``split``); with ``feedback.steer`` the
  subset is drawn by the prompt bandit (:mod:`feedback.bandit`) over what each seed's earlier prompts yielded.

Evidence is read only from rounds before the one being planned, and a round's plan is recorded with its
requests (``requests.context``): a resumed round replays the recorded in-context tasks, so it asks for
exactly the same requests whatever the pool or the evidence became in between (for example after the last
feedback window was settled at a budget stop). Seed topics are the human seeds' embedding clusters, the same
reference ``topics_covered`` uses; a promoted seed belongs to the topic of the nearest centroid.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diversity import cluster
from feedback import Arm, draw_thompson, draw_uniform, top_share
from sedi._types import EncodeFn
from sedi.config import SediConfig
from sedi.export import kept_tasks
from sedi.prompts import sample_in_context
from sedi.seedpool import active_pool, pool_tasks
from sedi.store import RunStore
from sedi.tasks import Task

Picker = Callable[[int, random.Random], list[Task]]  # (sample index, its rng) -> in-context tasks
SEED_TOPICS = 32  # the seed pool clustered once into this many topics (also the report's "topics covered")


def seed_topic_labels(encode: EncodeFn, seeds: Sequence[str], seed: int) -> Any:
    """Topic label of each human seed: its embedding cluster (one fixed clustering per run seed)."""
    return cluster(np.asarray(encode(list(seeds)), dtype=np.float32), SEED_TOPICS, seed=seed)


def _topics(encode: EncodeFn, human: Sequence[Task], tasks: Sequence[Task], seed: int) -> list[int]:
    """Each task's seed topic: the nearest centroid (cosine) of the human seeds' clusters."""
    human_vectors = np.asarray(encode([t.instruction for t in human]), dtype=np.float32)
    labels = seed_topic_labels(encode, [t.instruction for t in human], seed)
    topics = sorted(set(int(x) for x in labels))
    centroids = np.stack([human_vectors[labels == t].mean(axis=0) for t in topics])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
    vectors = np.asarray(encode([t.instruction for t in tasks]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    return [topics[int(i)] for i in (vectors @ centroids.T).argmax(axis=1)]


def _credit(store: RunStore, before_round: int) -> dict[str, tuple[float, float]]:
    """Each shown seed's offspring from earlier rounds' prompts: (kept, rejected) summed (see feedback.bandit)."""
    credit: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    rows = store.db.execute(
        "SELECT q.context, COALESCE(SUM(c.verdict = 'kept'), 0), COALESCE(SUM(c.verdict = 'rejected'), 0) "
        "FROM requests q LEFT JOIN candidates c ON c.request_key = q.request_key "
        "WHERE q.kind = 'tasks' AND q.round < ? GROUP BY q.request_key",
        (before_round,),
    )
    for context, kept, rejected in rows:
        shown = json.loads(context)
        for name in shown:
            credit[name][0] += kept
            credit[name][1] += rejected
    return {name: (k, r) for name, (k, r) in credit.items()}


def recorded_contexts(store: RunStore, round_index: int) -> dict[int, list[str]]:
    rows = store.db.execute(
        "SELECT sample_index, context FROM requests WHERE round = ? AND kind = 'tasks'", (round_index,)
    )
    return {int(i): json.loads(c) for i, c in rows}


def round_picker(
    store: RunStore, config: SediConfig, encode: EncodeFn, seeds: Sequence[Task], round_index: int
) -> Picker:
    """The in-context picker of one round (see the module docstring); records the round's prompt metrics."""
    gen, fb = config.generation, config.feedback
    if config.method != "sedi":
        machine = kept_tasks(store, before_round=round_index)
        return lambda _, rng: sample_in_context(seeds, machine, gen.human_in_context, gen.machine_in_context, rng)
    recorded = recorded_contexts(store, round_index)
    if recorded:  # a resumed round: the plan it was started with
        lookup = pool_tasks(store)
        return lambda index, _: [lookup[name] for name in recorded[index]]
    human, machine = active_pool(store)
    if fb.in_context == "split":
        return lambda _, rng: sample_in_context(human, machine, gen.human_in_context, gen.machine_in_context, rng)
    pool = human + machine
    credit = _credit(store, round_index)
    topics = _topics(encode, seeds, pool, config.run.seed)
    arms = [Arm(i, *credit.get(t.id, (0.0, 0.0)), topic=topics[i]) for i, t in enumerate(pool)]
    # As many tasks as the split would show (machine slots only while there are machine seeds), so that both
    # methods' first prompts are the same size and later ones differ in what they show, not in how much.
    k = gen.human_in_context + min(gen.machine_in_context, len(machine))
    shown: list[list[int]] = []
    explored = [0]

    def pick(_: int, rng: random.Random) -> list[Task]:
        if fb.steer:
            ids, n_explored = draw_thompson(arms, k, rng, fb.bandit)
            explored[0] += n_explored
        else:
            ids = draw_uniform(arms, k, rng)
        shown.append(ids)
        _record(store, round_index, arms, shown, explored[0], config)
        return [pool[i] for i in ids]

    return pick


def _record(
    store: RunStore, round_index: int, arms: list[Arm], shown: list[list[int]], explored: int, config: SediConfig
) -> None:
    slots = sum(len(ids) for ids in shown)
    metrics = {
        "prompt_top10_share": top_share(arms, shown, config.feedback.bandit.prior),
        "prompt_topics": float(len({arms[i].topic for ids in shown for i in ids})),
        "prompt_explore_share": explored / slots if slots else 0.0,
        "pool_topics": float(len({a.topic for a in arms})),
    }
    store.record_metrics(round_index, metrics)
