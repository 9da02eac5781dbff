"""Recency weights survive a long log: a history years before ``as_of`` must not underflow every
weight to 0 (NaN scores in the content recommender, missing centroid features in the reranker),
and must rank exactly like the same history moved up to ``as_of``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from features.ranking import CONTENT_KINDS, CandidateSet, ItemTable, RankingFeatures, UserState
from recsys.content_config import RecommenderSettings
from recsys.data import TrainingData
from recsys.data.interactions import IdIndex
from recsys.models.content import ContentRecommender
from recsys.vectors import ItemVectors, l2_normalise

AS_OF = dt.datetime(2024, 1, 1)
N_ITEMS, DIM = 30, 6
# One user's purchases: (item row, days before the user's latest purchase).
HISTORY = [(0, 100.0), (3, 5.0), (7, 2.0), (11, 1.0), (12, 0.0)]


def item_vectors() -> np.ndarray:
    return l2_normalise(np.random.default_rng(0).normal(size=(N_ITEMS, DIM)).astype(np.float32))


def content_model(offset_days: float, half_life: float = 3.0) -> tuple[ContentRecommender, TrainingData]:
    ids = np.array([f"i{j}" for j in range(N_ITEMS)])
    vec = item_vectors()
    vectors = ItemVectors(ids, vec, vec, vec, np.ones(N_ITEMS, bool), "test")
    rows = [("u", ids[item], AS_OF - dt.timedelta(days=offset_days + age)) for item, age in HISTORY]
    rows.append(("other", ids[20], AS_OF - dt.timedelta(days=1)))  # someone else bought recently
    inter = pl.DataFrame(
        {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "timestamp": [r[2] for r in rows], "weight": [1.0] * len(rows)}
    )
    data = TrainingData.build(inter, pl.DataFrame({"item_id": ids}), as_of=AS_OF)
    settings = RecommenderSettings(half_life_days=half_life, centroid_weight=0.5, history_items=20)
    return ContentRecommender(vectors, settings).fit(data), data


def test_content_scores_of_a_three_year_old_history_are_finite_and_rank_as_a_fresh_one() -> None:
    old, data = content_model(offset_days=1000.0)  # 1000-1100 days ago: 0.5 ** 333 underflows float32
    fresh, _ = content_model(offset_days=0.0)
    row = np.array([data.user_index.get("u")])
    old_scores, fresh_scores = old.score_users(row)[0], fresh.score_users(row)[0]
    assert np.isfinite(old_scores).all()
    np.testing.assert_allclose(old_scores, fresh_scores, rtol=0, atol=1e-6)
    assert old.recommend(["u"], N_ITEMS).item_ids == fresh.recommend(["u"], N_ITEMS).item_ids
    assert len(old.recommend(["u"], 10, exclude_seen=True).item_ids[0]) == 10

    # Where nothing underflows, the scores are those of the plain formula 0.5 ** (days_ago / half_life).
    E = item_vectors()
    items = np.array([i for i, _ in HISTORY])
    w = 0.5 ** (np.array([a for _, a in HISTORY]) / 3.0)
    w = w / w.max()
    centroid = l2_normalise((w @ E[items])[None, :])[0]
    expected = 0.5 * (E @ centroid) + 0.5 * ((E @ E[items].T) * w).max(axis=1)
    np.testing.assert_allclose(fresh_scores, expected, rtol=0, atol=1e-5)


def feature_table() -> ItemTable:
    vec = item_vectors().astype(np.float64)
    zeros = np.zeros(N_ITEMS)
    return ItemTable(
        index=IdIndex([f"i{j}" for j in range(N_ITEMS)]),
        categorical={},
        categories={},
        price=zeros,
        popularity={k: zeros for k in ("pop_1d", "pop_3d", "pop_7d", "trend")},
        content={k: vec for k in CONTENT_KINDS},
        has_image=np.ones(N_ITEMS, bool),
        factors={},
    )


def centroid_features(offset_days: float, half_life: float) -> np.ndarray:
    feats = RankingFeatures(feature_table(), {}, [], [], half_life_days=half_life)
    # the user's rows oldest first, as user_states gives them
    rows = np.array([i for i, _ in HISTORY], dtype=np.int64)
    days = np.array([offset_days + a for _, a in HISTORY])
    user = UserState("u", rows, days, np.full(len(rows), np.nan))
    x = feats.compute([user], [CandidateSet(np.arange(N_ITEMS, dtype=np.int64), {}, {})])
    cols = [feats.feature_names.index(f"sim_{k}_centroid") for k in CONTENT_KINDS]
    return x[:, cols]


def test_ranking_centroid_of_an_old_history_is_not_missing() -> None:
    # A short half-life makes even float64 underflow: 0.5 ** (1000 / 0.25) == 0.
    old = centroid_features(offset_days=1000.0, half_life=0.25)
    fresh = centroid_features(offset_days=0.0, half_life=0.25)
    assert np.isfinite(old).all()
    np.testing.assert_allclose(old, fresh, rtol=0, atol=1e-6)

    # Unchanged where nothing underflowed: the centroid of the plain weights 0.5 ** (days_ago / half_life).
    E = item_vectors().astype(np.float64)
    items = np.array([i for i, _ in HISTORY])
    for half_life in (0.25, 3.0):
        w = 0.5 ** (np.array([a for _, a in HISTORY]) / half_life)
        centroid = (w[:, None] * E[items]).sum(axis=0)
        expected = E @ (centroid / np.linalg.norm(centroid))
        got = centroid_features(offset_days=0.0, half_life=half_life)
        np.testing.assert_allclose(got, np.repeat(expected[:, None], len(CONTENT_KINDS), axis=1), rtol=0, atol=1e-6)
