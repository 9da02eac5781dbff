"""Protects the item-kNN fit over bought items only: the same similarity matrix as implicit's own recommenders."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

from recsys.config import ItemKNNConfig
from recsys.data import TrainingData
from recsys.models.implicit_models import ItemKNNRecommender


def _window(seed: int = 0) -> TrainingData:
    """60 users over a 90-item catalogue of which 31 items are ever bought."""
    rng = np.random.default_rng(seed)
    bought = [f"i{j:03d}" for j in range(0, 90, 3)] + ["i001"]
    rows = [(f"u{u:02d}", bought[int(rng.integers(len(bought)))]) for u in range(60) for _ in range(int(rng.integers(1, 8)))]
    log = pl.DataFrame(
        {
            "user_id": [u for u, _ in rows],
            "item_id": [i for _, i in rows],
            "timestamp": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=h) for h in range(len(rows))],
            "weight": rng.integers(1, 4, len(rows)).astype(np.float32),
        }
    )
    return TrainingData.build(log, pl.DataFrame({"item_id": [f"i{j:03d}" for j in range(90)]}))


@pytest.mark.parametrize(("similarity", "reference"), [("cosine", CosineRecommender), ("tfidf", TFIDFRecommender), ("bm25", BM25Recommender)])
@pytest.mark.parametrize("neighbours", [3, 10])
def test_the_neighbours_of_bought_items_are_implicits_over_the_whole_catalogue(similarity: str, reference: type, neighbours: int) -> None:
    data = _window()
    ours = ItemKNNRecommender(ItemKNNConfig(neighbours=neighbours, similarity=similarity)).fit(data).similarity
    theirs = reference(K=neighbours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns about the COO matrix its own normalize() hands its search
        theirs.fit(data.user_items, show_progress=False)
    expected = theirs.similarity.tocsr().astype(np.float32)
    assert ours.shape == expected.shape == (data.n_items, data.n_items)
    np.testing.assert_array_equal(ours.toarray(), expected.toarray())
    never_bought = np.asarray(data.user_items.sum(axis=0)).ravel() == 0
    assert never_bought.sum() >= 50 and not ours[never_bought].nnz and not ours[:, never_bought].nnz

