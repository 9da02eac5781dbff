"""``recsys.candidates.merge.merge_user`` is the one merge of candidate lists: offline generation
(``CandidateGenerator.generate`` -> ``merge``, which calls ``merge_user`` per user) and the serving
path (the recommendation engine in features/engine.py, which calls the candidate generator) both
go through it. It must equal weighted RRF written out plainly: same candidates, scores, ranks and
order, whatever the lists hold."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest

from recsys.candidates.merge import Candidate, merge_user


def reference_merge(lists: Mapping[str, Sequence[str]], size: int, weights: Mapping[str, float], rrf_k: float) -> list[Candidate]:
    """The definition, one object per item: score = sum of w / (rrf_k + first rank) per source;
    order by score, then best rank, then item id."""
    merged: dict[str, Candidate] = {}
    for source, items in lists.items():
        w = float(weights.get(source, 1.0))
        for rank, item in enumerate(items, start=1):
            cand = merged.setdefault(item, Candidate(item, 0.0))
            if source in cand.ranks:
                continue
            cand.ranks[source] = rank
            cand.score += w / (rrf_k + rank)
    return sorted(merged.values(), key=lambda c: (-c.score, min(c.ranks.values()), c.item_id))[:size]


@pytest.mark.parametrize("seed", range(40))
def test_merge_user_equals_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"i{n:03d}" for n in range(rng.choice([5, 40, 400]))]
    sources = rng.sample(["history", "als", "copurchase", "two_tower", "content", "same_product", "popularity"], rng.randint(1, 7))
    # Duplicates inside a list, empty lists, ties (equal weights and ranks), zero and missing weights.
    lists = {s: [rng.choice(pool) for _ in range(rng.randint(0, 160))] for s in sources}
    weights = {s: rng.choice([0.0, 0.5, 1.0, 1.0, 2.0, 4.0]) for s in sources if rng.random() < 0.8}
    size = rng.choice([1, 12, 150, 10_000])
    rrf_k = rng.choice([0.0, 10.0, 60.0])
    expected = reference_merge(lists, size, weights, rrf_k)
    got = merge_user(lists, size, weights, rrf_k)
    assert [(c.item_id, c.score, c.ranks) for c in got] == [(c.item_id, c.score, c.ranks) for c in expected]
    assert [c.sources for c in got] == [c.sources for c in expected]
