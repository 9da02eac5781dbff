"""Protects the screened top-k of factor models (serving's one customer, training's batches): it must
give exactly the lists of the float64 definition (every item's row-wise float64 dot product with the
user, ties to the lower row), ties and float32 near-ties included, one user alone or in a batch, or a
reranker feature (a candidate's ALS rank) would differ between serving and training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset
from recsys.evaluation.metrics import top_k_indices
from recsys.models.base import ScoringRecommender
from recsys.models.implicit_models import ALSRecommender


@pytest.fixture
def fitted(shop: tuple[Path, ProjectConfig]) -> ALSRecommender:
    _, config = shop
    ds = load_dataset(config.data)
    data = TrainingData.build(ds.interactions, ds.items, ds.users)
    model = ALSRecommender(config.models.als.model_copy(update={"iterations": 3})).fit(data)
    assert model.item_factors.dtype == np.float32  # else recommend() never takes the screened path
    return model


def full_product(model: ALSRecommender, users: list[str], k: int) -> tuple[list[list[str]], list[list[float]]]:
    """The definition: every item's float64 score (a row-wise sum, as the rescoring computes it), top k by
    (score, lower row); the popularity fallback for unknown users."""
    factors = model.item_factors.astype(np.float64)
    items, scores = [], []
    for user in users:
        row = model.user_index.get(user)
        if row is None:
            fallback = ScoringRecommender.recommend(model, [user], k)
            items.append(fallback.item_ids[0])
            scores.append(fallback.scores[0])
            continue
        exact = (factors * model.user_factors[row].astype(np.float64)).sum(axis=1)
        top = top_k_indices(exact, k)
        items.append(model.item_index.ids[top].tolist())
        scores.append(exact[top].tolist())
    return items, scores


def test_definition_agrees_with_the_blas_product_to_rounding(fitted: ALSRecommender) -> None:
    users = fitted.user_index.ids[:40].tolist()
    blas = ScoringRecommender.recommend(fitted, users, 10).scores
    for got, want in zip(full_product(fitted, users, 10)[1], blas):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def with_factors(model: ALSRecommender, users: np.ndarray, items: np.ndarray) -> ALSRecommender:
    model.user_factors, model.item_factors = users.astype(np.float32), items.astype(np.float32)
    return model


def test_screened_lists_equal_the_full_product(fitted: ALSRecommender) -> None:
    users = fitted.user_index.ids[:40].tolist()
    for k in (1, 10, len(fitted.item_index)):
        for user in users:
            recs = fitted.recommend([user], k)
            items, scores = full_product(fitted, [user], k)
            assert recs.item_ids == items
            np.testing.assert_allclose(recs.scores, scores, rtol=1e-12, atol=1e-12)


def test_exact_ties_and_float32_near_ties_resolve_as_the_full_product(fitted: ALSRecommender) -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, dim = len(fitted.user_index), len(fitted.item_index), fitted.item_factors.shape[1]
    items = rng.normal(size=(n_items, dim))
    items[1::3] = items[0]  # exact duplicates: equal scores, the lower row must come first
    # Rows that differ from row 2 by one float32 ulp in one coordinate: scores tie or nearly tie in
    # float32 but not in float64, so only the float64 rescoring orders them right.
    for r in range(5, n_items, 7):
        items[r] = items[2]
        items[r, r % dim] = np.nextafter(np.float32(items[2, r % dim]), np.float32(np.inf))
    model = with_factors(fitted, rng.normal(size=(n_users, dim)), items)
    for user in model.user_index.ids[:30].tolist():
        for k in (5, 40):
            recs = model.recommend([user], k)
            expected_items, expected_scores = full_product(model, [user], k)
            assert recs.item_ids == expected_items
            np.testing.assert_allclose(recs.scores, expected_scores, rtol=1e-12, atol=1e-12)


def test_large_requests_unknown_users_and_exclude_seen_keep_the_full_path(fitted: ALSRecommender) -> None:
    users = fitted.user_index.ids[: ALSRecommender.SCREEN_MAX_USERS + 1].tolist()
    assert fitted.recommend(users, 7).item_ids == full_product(fitted, users, 7)[0]
    mixed = [users[0], "nobody-knows-me"]
    recs = fitted.recommend(mixed, 7)
    assert recs.item_ids[0] == full_product(fitted, [users[0]], 7)[0][0] and len(recs.item_ids[1]) == 7  # popularity fallback
    seen = fitted.recommend([users[0]], 7, exclude_seen=True)
    assert not set(seen.item_ids[0]) & set(fitted.item_index.ids[fitted.seen_rows(np.array([0]))[0]].tolist())


def test_batch_screening_equals_the_full_product_on_ties_and_near_ties(fitted: ALSRecommender) -> None:
    """Batches (label folds, the precomputed table) are screened by one float32 product, split into blocks."""
    rng = np.random.default_rng(1)
    n_users, n_items, dim = len(fitted.user_index), len(fitted.item_index), fitted.item_factors.shape[1]
    items = rng.normal(size=(n_items, dim))
    items[1::3] = items[0]
    for r in range(5, n_items, 7):
        items[r] = items[2]
        items[r, r % dim] = np.nextafter(np.float32(items[2, r % dim]), np.float32(np.inf))
    model = with_factors(fitted, rng.normal(size=(n_users, dim)), items)
    model.SCREEN_BLOCK_FLOATS = n_items * 3  # blocks of 3 users
    users = model.user_index.ids.tolist() + ["nobody-knows-me"]
    for k in (5, 40):
        recs = model.recommend(users, k)
        expected_items, expected_scores = full_product(model, users, k)
        assert recs.item_ids == expected_items
        for got, want in zip(recs.scores, expected_scores):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_never_bought_items_with_zero_factors_enter_only_when_scores_are_not_positive(fitted: ALSRecommender) -> None:
    """Zero-factor items (never bought) are skipped by the screening, and come back, at score 0 and by row,
    for a user with fewer than k positive scores (here: users whose factors point away from every item)."""
    rng = np.random.default_rng(2)
    n_users, n_items, dim = len(fitted.user_index), len(fitted.item_index), fitted.item_factors.shape[1]
    items = np.abs(rng.normal(size=(n_items, dim)))
    items[::2] = 0.0  # half the catalogue never bought
    users = rng.normal(size=(n_users, dim))
    users[: n_users // 2] = -np.abs(users[: n_users // 2])  # every score negative: the zero items rank first
    model = with_factors(fitted, users, items)
    ids = model.user_index.ids.tolist()
    for k in (3, n_items // 2 + 2):
        expected_items, expected_scores = full_product(model, ids, k)
        for got in (model.recommend(ids, k), *[model.recommend([u], k) for u in ids[:4] + ids[-4:]]):
            want = [expected_items[ids.index(u)] for u in got.user_ids]
            assert got.item_ids == want
    assert model.recommend(ids[:1], 3).item_ids[0] == model.item_index.ids[[0, 2, 4]].tolist()
