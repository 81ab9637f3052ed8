"""feedback.bandit: Thompson sampling over seeds' offspring keep rate, with exploration and topic floors."""

from __future__ import annotations

import random

from feedback import Arm, BanditConfig, draw_thompson, draw_uniform, posterior_mean, top_share


def _arms(n: int = 100, topics: int = 20, good: int = 10) -> list[Arm]:
    """``good`` seeds whose prompts were mostly kept, the rest mostly rejected; ``topics`` topics round-robin."""
    return [
        Arm(i, kept=8.0 if i < good else 1.0, rejected=1.0 if i < good else 8.0, topic=i % topics) for i in range(n)
    ]


def _share_of_good(draws: list[list[int]], good: int = 10) -> float:
    slots = [i for ids in draws for i in ids]
    return sum(i < good for i in slots) / len(slots)


def test_thompson_prefers_productive_seeds_and_uniform_does_not() -> None:
    arms, rng = _arms(), random.Random(0)
    config = BanditConfig(explore=0.25, one_per_topic=False)
    steered = [draw_thompson(arms, 8, rng, config)[0] for _ in range(200)]
    uniform = [draw_uniform(arms, 8, rng) for _ in range(200)]
    assert _share_of_good(uniform) < 0.15  # 10% of the pool
    assert _share_of_good(steered) > 0.6
    assert top_share(arms, steered) > 0.6 > 0.15 > top_share(arms, uniform)
    assert all(len(ids) == len(set(ids)) == 8 for ids in steered)


def test_the_exploration_floor_keeps_every_seed_reachable() -> None:
    arms, rng = _arms(), random.Random(1)
    config = BanditConfig(explore=0.25, one_per_topic=False)
    shown: set[int] = set()
    for _ in range(300):
        ids, explored = draw_thompson(arms, 8, rng, config)
        assert explored == 2
        shown.update(ids)
    assert len(shown) > 90  # the weak seeds still get shown through the uniform slots
    greedy = BanditConfig(explore=0.0, one_per_topic=False)
    assert all(draw_thompson(arms, 8, rng, greedy)[1] == 0 for _ in range(5))


def test_the_topic_floor_spreads_a_prompt_over_topics() -> None:
    # the ten productive seeds all share topic 0: without the floor prompts fill with that one topic
    arms = [
        Arm(i, kept=8.0 if i < 10 else 1.0, rejected=1.0 if i < 10 else 8.0, topic=0 if i < 10 else i)
        for i in range(60)
    ]
    rng = random.Random(2)
    with_floor = [draw_thompson(arms, 8, rng, BanditConfig(explore=0.0))[0] for _ in range(50)]
    without = [draw_thompson(arms, 8, rng, BanditConfig(explore=0.0, one_per_topic=False))[0] for _ in range(50)]
    topics = {a.id: a.topic for a in arms}
    assert all(len({topics[i] for i in ids}) == 8 for ids in with_floor)
    assert sum(len({topics[i] for i in ids}) for ids in without) / 50 < 4
    # fewer topics than slots: the prompt is still filled, by rank
    few = [Arm(i, topic=i % 3) for i in range(20)]
    assert len(set(draw_thompson(few, 8, rng, BanditConfig())[0])) == 8


def test_posterior_mean_and_determinism() -> None:
    assert posterior_mean(Arm(0)) == 0.5 and posterior_mean(Arm(0, kept=3, rejected=1), prior=2) == 4 / 6
    # the prior is centred on the pool's keep rate: an unseen seed ranks like an average one, not like a 50% one
    assert posterior_mean(Arm(0), prior=2, rate=0.25) == 0.25
    arms = _arms()
    first = [draw_thompson(arms, 8, random.Random(7), BanditConfig())[0] for _ in range(3)]
    again = [draw_thompson(arms, 8, random.Random(7), BanditConfig())[0] for _ in range(3)]
    assert first == again
