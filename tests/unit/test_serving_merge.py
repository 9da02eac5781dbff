"""The serving merge is the training merge: same candidates, scores, ranks and order."""

from __future__ import annotations

import random

import pytest

from recsys.candidates.merge import merge_user
from serving.merge import merge_ranked


@pytest.mark.parametrize("seed", range(40))
def test_merge_ranked_equals_merge_user(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"i{n:03d}" for n in range(rng.choice([5, 40, 400]))]
    sources = rng.sample(["history", "als", "copurchase", "two_tower", "content", "same_product", "popularity"], rng.randint(1, 7))
    # Duplicates inside a list, empty lists, ties (equal weights and ranks), zero and missing weights.
    lists = {s: [rng.choice(pool) for _ in range(rng.randint(0, 160))] for s in sources}
    weights = {s: rng.choice([0.0, 0.5, 1.0, 1.0, 2.0, 4.0]) for s in sources if rng.random() < 0.8}
    size = rng.choice([1, 12, 150, 10_000])
    rrf_k = rng.choice([0.0, 10.0, 60.0])
    expected = merge_user(lists, size, weights, rrf_k)
    got = merge_ranked(lists, size, weights, rrf_k)
    assert [(c.item_id, c.score, c.ranks) for c in got] == [(c.item_id, c.score, c.ranks) for c in expected]
    assert [c.sources for c in got] == [c.sources for c in expected]
