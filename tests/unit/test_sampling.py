"""Fixed-seed user samples that bound per-user work on big logs (recsys/data/sampling.py)."""

from __future__ import annotations

from pathlib import Path

from recsys.data import load_dataset
from recsys.data.sampling import sample_users
from recsys.evaluation.protocol import prepare_evaluation
from tests.conftest import make_shop, shop_config


def test_sample_keeps_order_is_repeatable_and_leaves_small_sets_whole() -> None:
    users = [f"u{i}" for i in range(1000)]
    first = sample_users(users, 100, seed=7, what="test")
    assert len(first) == 100 == len(set(first))
    assert first == sorted(first, key=users.index), "the original order is kept"
    assert first == sample_users(users, 100, seed=7, what="test"), "same seed, same sample"
    assert first != sample_users(users, 100, seed=8, what="test")
    assert sample_users(users, None, seed=7, what="test") == users
    assert sample_users(users[:50], 100, seed=7, what="test") == users[:50]


def test_evaluation_scores_a_sample_of_test_users_with_their_own_truth(tmp_path: Path) -> None:
    config = shop_config(make_shop(tmp_path / "shop", n_users=600), tmp_path / "work")
    dataset = load_dataset(config.data)
    everyone = prepare_evaluation(dataset, config)
    assert len(everyone.users) > 100, "the shop needs more test users than the smallest sample"
    capped = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"max_users": 100})})
    sampled = prepare_evaluation(dataset, capped)
    assert len(sampled.users) == 100 and set(sampled.users) <= set(everyone.users)
    assert set(sampled.truth) == set(sampled.users)
    assert all(sampled.truth[u] == everyone.truth[u] for u in sampled.users)
