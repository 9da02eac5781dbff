"""The content-only recommender's own behaviour (the shared contract runs in tests/contract)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.content_config import RecommenderSettings
from recsys.data import TrainingData
from recsys.models.content import ContentRecommender
from recsys.registry import MODEL_CLASSES
from recsys.vectors import ItemVectors, l2_normalise

# Four directions: dresses (x), jeans (y), boots (z), hats (w); two items per direction + a near copy.
VECS = {
    "dress1": [1, 0, 0, 0], "dress2": [0.95, 0.05, 0, 0], "jeans1": [0, 1, 0, 0], "jeans2": [0, 0.95, 0.05, 0],
    "boots1": [0, 0, 1, 0], "boots2": [0.05, 0, 0.95, 0], "hat1": [0, 0, 0, 1], "hat2": [0, 0.05, 0, 0.95],
}


def vectors() -> ItemVectors:
    ids = np.array(list(VECS))
    text = l2_normalise(np.array(list(VECS.values()), dtype=np.float32))
    has = np.ones(len(ids), bool)
    return ItemVectors(ids, text, text, text, has, "test")


def training() -> TrainingData:
    day = dt.datetime(2024, 1, 1)
    rows = [
        ("u1", "dress1", day), ("u1", "jeans1", day + dt.timedelta(days=6)),  # old dress, fresh jeans
        ("u2", "boots1", day + dt.timedelta(days=6)), ("u2", "hat1", day + dt.timedelta(days=6)),  # two tastes
    ]
    inter = pl.DataFrame(
        {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "timestamp": [r[2] for r in rows], "weight": [1.0] * len(rows)}
    )
    items = pl.DataFrame({"item_id": list(VECS)})
    return TrainingData.build(inter, items, as_of=day + dt.timedelta(days=7))


def test_recent_taste_ranks_above_old_taste() -> None:
    model = ContentRecommender(vectors(), RecommenderSettings(half_life_days=1.0, centroid_weight=0.5)).fit(training())
    recs = model.recommend(["u1"], 4, exclude_seen=True).item_ids[0]
    assert recs[0] == "jeans2", recs  # the lookalike of the fresh purchase beats the old dress's
    assert recs.index("jeans2") < recs.index("dress2")


def test_max_term_keeps_both_tastes_of_a_user() -> None:
    data = training()
    blended = ContentRecommender(vectors(), RecommenderSettings(centroid_weight=0.0)).fit(data)
    top2 = blended.recommend(["u2"], 2, exclude_seen=True).item_ids[0]
    assert set(top2) == {"boots2", "hat2"}
    # Items the user bought score 1 with themselves, so re-purchases rank first without exclusion.
    assert set(blended.recommend(["u2"], 2).item_ids[0]) == {"boots1", "hat1"}


def test_missing_vectors_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recsys content"):
        ContentRecommender(tmp_path / "nope.npz")


def test_save_load_keeps_settings_and_encoder(tmp_path: Path) -> None:
    model = ContentRecommender(vectors(), RecommenderSettings(history_items=3, centroid_weight=0.2)).fit(training())
    loaded = MODEL_CLASSES["content"].load(model.save(tmp_path / "m"))
    assert isinstance(loaded, ContentRecommender)
    assert loaded.settings == model.settings and loaded.encoder == "test"
    assert loaded.recommend(["u1", "u2"], 5).item_ids == model.recommend(["u1", "u2"], 5).item_ids
    with pytest.raises(ValueError, match="refitted"):
        loaded.fit(training())


def test_recent_days_ranks_recently_sold_items_first() -> None:
    data = training()  # only u1's jeans1 and u2's items were bought in the last 2 days
    model = ContentRecommender(vectors(), RecommenderSettings(recent_days=2)).fit(data)
    recs = model.recommend(["u1"], 8).item_ids[0]
    assert set(recs[:3]) == {"jeans1", "boots1", "hat1"} and recs[0] == "jeans1"


def _one_user_at_a_time(model: ContentRecommender, row: int) -> np.ndarray:
    """The score's definition for one user, straight from the formula (the reference of the grouped product)."""
    E = model.item_vectors
    start, end = model.history.indptr[row], model.history.indptr[row + 1]
    items, w = model.history.indices[start:end], model.history.data[start:end]
    if not len(items):
        return np.zeros(E.shape[0], dtype=np.float32) + model.offset
    w = w / w.max()
    centroid = l2_normalise((w @ E[items])[None, :])[0]
    cw = model.settings.centroid_weight
    return cw * (E @ centroid) + (1 - cw) * ((E @ E[items].T) * w).max(axis=1) + model.offset


def test_grouped_scoring_equals_one_user_at_a_time() -> None:
    """Users are scored in groups sharing one product with the catalogue; each row must be that user's own score,
    also when the groups split (a tiny catalogue budget), users repeat and some have no history."""
    rng = np.random.default_rng(3)
    n_items, n_users = 300, 40
    ids = np.array([f"i{i}" for i in range(n_items)])
    vecs = l2_normalise(rng.normal(size=(n_items, 8)).astype(np.float32))
    day = dt.datetime(2024, 1, 1)
    users = [f"u{rng.integers(n_users - 5)}" for _ in range(600)]  # u35..u39 never buy
    inter = pl.DataFrame({
        "user_id": users, "item_id": ids[rng.integers(n_items, size=600)].tolist(),
        "timestamp": [day + dt.timedelta(hours=int(h)) for h in rng.integers(24 * 20, size=600)], "weight": [1.0] * 600,
    })
    data = TrainingData.build(inter, pl.DataFrame({"item_id": ids.tolist()}), as_of=day + dt.timedelta(days=21))
    model = ContentRecommender(ItemVectors(ids, vecs, vecs, vecs, np.ones(n_items, bool), "test"), RecommenderSettings(history_items=7)).fit(data)
    rows = np.concatenate([np.arange(data.n_users), [0, 3, 3]])
    model.score_block_floats = n_items * 10  # groups of at most 10 history items: many groups
    grouped = model.score_users(rows)
    reference = np.stack([_one_user_at_a_time(model, int(r)) for r in rows])
    np.testing.assert_allclose(grouped, reference, rtol=1e-5, atol=1e-6)
