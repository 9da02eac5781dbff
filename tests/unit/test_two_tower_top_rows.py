"""Protects the two-tower's batch top-k: the screened search must give the lists of scoring every item.

Evaluation asks a fitted two-tower for 10,000 users' lists at once; scoring the whole catalogue
for each was most of ``evaluate`` at the 100x rung, so many known users are searched by the
candidate generator's screened exact search instead. These tests build a model whose catalogue is
mostly never-bought items near a low-dimensional subspace (as on the big logs) and compare the two
paths list by list.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.interactions import IdIndex
from recsys.models.base import ScoringRecommender
from recsys.two_tower import recommender as two_tower_module
from recsys.two_tower.recommender import TwoTowerRecommender

N_USERS, N_WARM, N_COLD, DIM = 900, 400, 3600, 160


def _model() -> TwoTowerRecommender:
    """A 'fitted' two-tower without training: its vectors, indexes, seen matrix and fallback set by hand."""
    rng = np.random.default_rng(7)
    warm = rng.standard_normal((N_WARM, DIM)).astype(np.float32)
    basis = rng.standard_normal((20, DIM))
    cold = (rng.standard_normal((N_COLD, 20)) @ basis * 0.05 + rng.standard_normal((N_COLD, DIM)) * 0.002).astype(np.float32)
    model = TwoTowerRecommender()
    model.item_vectors = np.vstack([warm, cold])
    model.user_vectors = rng.standard_normal((N_USERS, DIM)).astype(np.float32)
    model.user_index = IdIndex([f"u{i}" for i in range(N_USERS)])
    model.item_index = IdIndex([f"i{j}" for j in range(N_WARM + N_COLD)])
    # every user bought 1-30 of the warm items; the cold items were never bought
    lengths = rng.integers(1, 31, N_USERS)
    cols = np.concatenate([rng.choice(N_WARM, n, replace=False) for n in lengths])
    users = np.repeat(np.arange(N_USERS), lengths)
    model.seen = sp.csr_matrix((np.ones(len(cols), np.float32), (users, cols)), shape=(N_USERS, N_WARM + N_COLD))
    model.fallback_scores = np.bincount(cols, minlength=N_WARM + N_COLD).astype(np.float64)
    return model


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_screened_lists_equal_scoring_every_item(exclude_seen: bool) -> None:
    model = _model()
    users = [f"u{i}" for i in range(N_USERS)] + ["stranger"]  # an unknown user gets the fallback on both paths
    rows, scores = model.top_rows(users, 50, exclude_seen=exclude_seen)
    plain_rows, plain_scores = ScoringRecommender.top_rows(model, users, 50, exclude_seen=exclude_seen)
    search = model._screened_search()
    assert search is not None and 0 < search.hits_per_query < two_tower_module.SCREEN_MAX_HITS, "the screen was used and paid"
    for got, want in zip(rows, plain_rows):
        assert np.array_equal(got, want)
    for got, want in zip(scores, plain_scores):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if exclude_seen:
        seen = model.seen_rows(np.arange(N_USERS))
        assert not any(np.isin(r, s).any() for r, s in zip(rows, seen))
    assert rows[-1].tolist() == plain_rows[-1].tolist() and len(rows[-1]) == 50


def test_few_users_or_an_unscreenable_catalogue_take_the_plain_path() -> None:
    model = _model()
    few = [f"u{i}" for i in range(two_tower_module.SCREEN_MIN_USERS - 1)]
    rows, _ = model.top_rows(few, 20)
    assert "_screen_cache" not in model.__dict__, "too few users to pay for building the screen"
    assert all(np.array_equal(a, b) for a, b in zip(rows, ScoringRecommender.top_rows(model, few, 20)[0]))
    model.item_vectors = model.item_vectors[:, :64].copy()  # narrower than the screen's rank: no screen
    model.user_vectors = model.user_vectors[:, :64].copy()
    users = [f"u{i}" for i in range(N_USERS)]
    rows, _ = model.top_rows(users, 20)
    assert model._screened_search() is None
    assert all(np.array_equal(a, b) for a, b in zip(rows, ScoringRecommender.top_rows(model, users, 20)[0]))
