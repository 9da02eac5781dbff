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


def test_many_rows_fold_in_on_two_threads_to_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large fold-ins (the two-tower's training examples) use two threads; each row is its own
    solve, so the vectors are bit-identical to one thread's."""
    import scipy.sparse as sp

    from recsys.config import ALSConfig
    from recsys.models import implicit_models

    rng = np.random.default_rng(0)
    n, m = 3000, 400
    counts = sp.csr_matrix((rng.random(20_000).astype(np.float32), (rng.integers(0, n, 20_000), rng.integers(0, m, 20_000))), shape=(n, m))
    counts.sum_duplicates()
    factors = (0.1 * rng.standard_normal((m, 16))).astype(np.float32)
    assert n >= implicit_models.FOLD_IN_PARALLEL_ROWS
    monkeypatch.setattr(implicit_models, "FOLD_IN_THREADS", 1)
    one = implicit_models.solve_user_factors(counts, factors, ALSConfig(factors=16))
    monkeypatch.setattr(implicit_models, "FOLD_IN_THREADS", 2)
    two = implicit_models.solve_user_factors(counts, factors, ALSConfig(factors=16))
    assert np.isfinite(one).all() and np.array_equal(one, two)
