"""Protects ALS fold-in (new or anonymous users in serving): a known user's own history folded in
reproduces their trained vector, and nothing comes out NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset
from recsys.models.implicit_models import ALSRecommender, confidence_weighting


@pytest.mark.parametrize("weighting", ["bm25", "tfidf", "none"])
def test_fold_in_matches_training_weighting_and_vector(shop: tuple[Path, ProjectConfig], weighting: str) -> None:
    _, config = shop
    ds = load_dataset(config.data)
    data = TrainingData.build(ds.interactions, ds.items, ds.users)
    model = ALSRecommender(config.models.als.model_copy(update={"weighting": weighting, "iterations": 15})).fit(data)
    weighted = confidence_weighting(data.user_items, weighting)
    for row in range(5):
        counts = data.user_items[row]
        # the same weights training gave this user's row
        np.testing.assert_allclose(model.weight_new_rows(counts).toarray(), weighted[row].toarray(), rtol=1e-5, atol=1e-6)
        items = data.item_index.ids[counts.indices].tolist()
        vec = model.fold_in(items, counts.data.tolist())
        assert np.isfinite(vec).all()
        trained = model.user_factors[row]
        cos = float(vec @ trained / (np.linalg.norm(vec) * np.linalg.norm(trained)))
        assert cos > 0.95, cos
