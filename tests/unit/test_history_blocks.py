"""Protects the per-user ranking of a window's items in blocks of users (history and content models): the same matrices as one pass."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys.content_config import RecommenderSettings
from recsys.data import TrainingData, stats
from recsys.data.stats import user_blocks
from recsys.models.content import ContentRecommender
from recsys.models.history import HistoryRecommender
from recsys.vectors import ItemVectors


def _window(seed: int = 0) -> TrainingData:
    """80 users with 1-12 purchases each over 5 days (many same-day ties and repeats) of 40 items."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u:02d}", f"i{int(rng.integers(40)):02d}", int(rng.integers(5))) for u in range(80) for _ in range(int(rng.integers(1, 13)))]
    rows.sort(key=lambda r: r[2])  # a time-sorted log, as loading gives it
    log = pl.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "timestamp": [dt.datetime(2024, 1, 1) + dt.timedelta(days=d) for _, _, d in rows],
            "weight": np.ones(len(rows), dtype=np.float32),
        }
    )
    return TrainingData.build(log, pl.DataFrame({"item_id": [f"i{j:02d}" for j in range(45)]}))


def _assert_same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape and a.nnz == b.nnz and a.has_sorted_indices and b.has_sorted_indices
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("block_rows", [1, 7, 50])
def test_blocks_of_users_give_the_history_of_one_pass(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    data = _window()
    whole = HistoryRecommender().fit(data).history
    monkeypatch.setattr(stats, "RANK_BLOCK_ROWS", block_rows)
    _assert_same_csr(HistoryRecommender().fit(data).history, whole)


@pytest.mark.parametrize("block_rows", [1, 50])
def test_blocks_of_users_give_the_content_models_recent_items_of_one_pass(monkeypatch: pytest.MonkeyPatch, block_rows: int) -> None:
    data = _window(1)
    rng = np.random.default_rng(3)
    v = rng.normal(size=(45, 8)).astype(np.float32)
    vectors = ItemVectors(np.array([f"i{j:02d}" for j in range(45)]), v, v, v, np.ones(45, bool), "test")
    settings = RecommenderSettings(history_items=3, half_life_days=2.0)
    whole = ContentRecommender(vectors, settings).fit(data).history
    monkeypatch.setattr(stats, "RANK_BLOCK_ROWS", block_rows)
    _assert_same_csr(ContentRecommender(vectors, settings).fit(data).history, whole)
    assert np.diff(whole.indptr).max() == 3 and whole.data.max() == 1.0  # each user's latest item weighs 1


def test_the_latest_purchase_ranks_first_then_the_more_bought_then_the_later_in_the_log() -> None:
    t = [dt.datetime(2024, 1, d) for d in (1, 1, 2, 2, 2, 2)]
    log = pl.DataFrame({"user_id": ["u"] * 6, "item_id": ["a", "b", "c", "d", "d", "e"], "timestamp": t, "weight": np.ones(6, np.float32)})
    data = TrainingData.build(log, pl.DataFrame({"item_id": ["a", "b", "c", "d", "e"]}))
    scores = HistoryRecommender().fit(data).history.toarray()[0]
    order = [str(data.item_index.ids[j]) for j in np.argsort(-scores)]
    # day 2: d twice first, then e (later in the log) before c; day 1: b (later) before a.
    assert order == ["d", "e", "c", "b", "a"]
    assert scores.min() > 1.0


def test_user_blocks_cover_every_user_in_order() -> None:
    counts = np.array([3, 0, 5, 1, 1, 9, 0, 2])
    blocks = user_blocks(counts, 4)
    assert len(blocks) > 2 and blocks[0][0] == 0 and blocks[-1][1] == len(counts)
    assert all(a < b for a, b in blocks) and all(blocks[k][1] == blocks[k + 1][0] for k in range(len(blocks) - 1))
    assert user_blocks(np.zeros(3, dtype=np.int64), 4) == [(0, 3)]
    assert user_blocks(np.zeros(0, dtype=np.int64), 4) == [(0, 0)]
    assert user_blocks(counts, 10_000) == [(0, len(counts))]
