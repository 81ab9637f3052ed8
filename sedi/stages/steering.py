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

Each request also has a shape (:mod:`sedi.config.shaping`): with ``generation.shaping: fixed`` the one the settings
give, drawn exactly as before (only tasks of at most ``generation.max_task_chars``, when that is set); with
``learn`` one of ``generation.shapes.options`` (or of the shapes derived from the settings) chosen by
:mod:`feedback.shaping` from earlier rounds' kept tasks per dollar, its prompt showing ``in_context`` tasks of at most
``max_task_chars`` (split between human and machine tasks in the proportion of human_in_context to
machine_in_context). The shapes are recorded with the requests (``requests.shape``) and a resumed round replays them
like its in-context tasks.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diversity import cluster
from feedback import Arm, draw_thompson, draw_uniform, top_share
from feedback.shaping import ShapingRule, plan_shapes
from sedi.base.vocabulary import EncodeFn
from sedi.config.model import SediConfig
from sedi.config.seeds import Task
from sedi.config.shaping import PromptShape
from sedi.exceptions import RunDirError
from sedi.stages.prompts import sample_in_context
from sedi.stages.seedpool import active_pool, pool_tasks
from sedi.stages.shapes import ShapeStats, shape_stats, shown_tasks
from sedi.stages.shapes import arms as shape_arms
from sedi.store import plans, seeds
from sedi.store.dataset import kept_tasks
from sedi.store.db import RunStore


@dataclass(frozen=True)
class Pick:
    """What one request shows and how it is shaped."""

    shape: PromptShape
    tasks: list[Task]
    fixed: bool = True  # generation.shaping 'fixed': the request is built exactly as before shapes existed


Picker = Callable[[int, random.Random], Pick]  # (sample index, its rng) -> the request's shape and in-context tasks
Draw = Callable[[int, random.Random, PromptShape | None], list[Task]]  # shape None: today's draw
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
    for request in seeds.credit(store, before_round):
        for name in request.shown:
            credit[name][0] += request.kept
            credit[name][1] += request.rejected
    return {name: (k, r) for name, (k, r) in credit.items()}


def round_shapes(store: RunStore, config: SediConfig, round_index: int) -> dict[int, PromptShape] | None:
    """Each request's shape with ``generation.shaping: learn``, by sample index: the recorded ones for a resumed
    round, else chosen by :mod:`feedback.shaping` from earlier rounds' outcomes; None with ``fixed``."""
    gen = config.generation
    if gen.shaping == "fixed":
        return None
    options = {s.name: s for s in gen.shape_options()}
    first = round_index * gen.calls_per_round
    indices = range(first, first + gen.calls_per_round)
    recorded = plans.recorded_shapes(store, round_index)
    if recorded:  # a resumed round: the shapes it was started with
        missing = sorted(set(recorded.values()) - set(options))
        if missing:
            raise RunDirError(
                f"{store.run_dir}: round {round_index + 1} was planned with shape {missing[0]}, which "
                "generation.shapes.options no longer lists: resume with the settings it was started with (config.yaml "
                "of the run directory) or use a new --run-dir"
            )
    stats = {s.name: s for s in shape_stats(store.db, before_round=round_index)}
    listed = list(options.values())
    evidence = shape_arms(
        [stats.get(s.name) or ShapeStats(s.name, 0, 0, 0.0) for s in listed],
        per_dollar=config.teacher.prices is not None,
    )
    rule = ShapingRule(gen.shapes.min_tries, gen.shapes.floor, gen.shapes.prior)
    rngs = [random.Random(f"{config.run.seed}:{i}:shape") for i in indices]
    chosen = dict(zip(indices, (listed[k] for k in plan_shapes(evidence, rngs, rule)), strict=True))
    return {i: options[recorded[i]] if i in recorded else chosen[i] for i in indices}


def _split(config: SediConfig, shape: PromptShape | None) -> tuple[int, int]:
    """(human, machine) tasks a prompt shows: the settings', or a shape's in their proportion."""
    gen = config.generation
    if shape is None:
        return gen.human_in_context, gen.machine_in_context
    both = gen.human_in_context + gen.machine_in_context
    machine = int(shape.in_context * gen.machine_in_context / both + 0.5) if both else 0
    # At least one human seed when the settings show any: a 1-task shape with 2 + 2 in the settings rounded to 0 + 1,
    # and before any machine task exists that prompt showed nothing (tests/test_run_e2e.py).
    if gen.human_in_context and machine >= shape.in_context:
        machine = shape.in_context - 1
    return shape.in_context - machine, machine


def round_picker(
    store: RunStore, config: SediConfig, encode: EncodeFn, seeds: Sequence[Task], round_index: int
) -> Picker:
    """The in-context picker of one round (see the module docstring); records the round's prompt metrics."""
    shapes = round_shapes(store, config, round_index)
    draw = _round_draw(store, config, encode, seeds, round_index)
    fixed = config.generation.fixed_shape()
    # 'fixed' without generation.max_task_chars draws exactly as before shapes existed (no shape given to the draw)
    limited = fixed if fixed.max_task_chars is not None else None

    def pick(index: int, rng: random.Random) -> Pick:
        if shapes is None:
            return Pick(fixed, draw(index, rng, limited))
        return Pick(shapes[index], draw(index, rng, shapes[index]), fixed=False)

    return pick


def _round_draw(store: RunStore, config: SediConfig, encode: EncodeFn, seeds: Sequence[Task], round_index: int) -> Draw:
    """The round's in-context draw; with no shape (``shaping: fixed``) exactly the draw of before shapes existed."""
    fb = config.feedback
    if config.method != "sedi":
        machine = kept_tasks(store, before_round=round_index)
        return lambda _, rng, shape: sample_in_context(
            shown_tasks(seeds, shape), shown_tasks(machine, shape), *_split(config, shape), rng
        )
    recorded = plans.recorded_contexts(store, round_index)
    if recorded:  # a resumed round: the plan it was started with
        lookup = pool_tasks(store)
        return lambda index, _, __: [lookup[name] for name in recorded[index]]
    human, machine = active_pool(store)
    if fb.in_context == "split":
        return lambda _, rng, shape: sample_in_context(
            shown_tasks(human, shape), shown_tasks(machine, shape), *_split(config, shape), rng
        )
    pool = human + machine
    credit = _credit(store, round_index)
    topics = _topics(encode, seeds, pool, config.run.seed)
    arms = [Arm(i, *credit.get(t.id, (0.0, 0.0)), topic=topics[i]) for i, t in enumerate(pool)]
    # As many tasks as the split would show (machine slots only while there are machine seeds), so that both
    # methods' first prompts are the same size and later ones differ in what they show, not in how much.
    human_k, machine_k = _split(config, None)
    k = human_k + min(machine_k, len(machine))
    shown: list[list[int]] = []
    explored = [0]

    def pick(_: int, rng: random.Random, shape: PromptShape | None) -> list[Task]:
        eligible = arms if shape is None else [a for a in arms if shown_tasks([pool[a.id]], shape)]
        size = k if shape is None else shape.in_context
        if fb.steer:
            ids, n_explored = draw_thompson(eligible, size, rng, fb.bandit)
            explored[0] += n_explored
        else:
            ids = draw_uniform(eligible, size, rng)
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
