"""The user's own history, most recent first, filled up with recent popularity."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import polars as pl

from recsys.data.interactions import TrainingData
from recsys.data.stats import ranked_user_items, user_item_csr
from recsys.models.base import ScoringRecommender
from recsys.models.serialization import csr_from_arrays, csr_to_arrays


class HistoryRecommender(ScoringRecommender):
    """Re-recommend what the user bought, latest purchase first; popularity fills the rest.

    Within one timestamp (H&M logs have dates only) the item bought more often ranks first, then
    the one appearing later in the log. History scores live in (1, 2]; popularity in [0, 1).

    Args:
        window_days: popularity window for the fill.
    """

    name = "history"

    def __init__(self, window_days: int = 2):
        self.window_days = window_days

    def fit(self, data: TrainingData) -> Self:
        """Rank each user's items by last purchase (see the class docstring); popularity for the fill."""
        self._fit_common(data, fallback_days=self.window_days)
        ranked = ranked_user_items(
            data.encoded,
            data.n_users,
            # _pos: pairs bought the same day rank by purchases, then by where they come in the (time-ordered) log.
            [pl.col("timestamp").max().alias("last"), pl.len().alias("n"), pl.col("_pos").max().alias("pos")],
            ["last", "n", "pos"],
            [True, True, True],
            # score = 1 + 1/(rank+1): strictly decreasing with rank, always above any popularity score.
            [(1.0 + 1.0 / (pl.col("rank").cast(pl.Float64) + 1.0)).cast(pl.Float32).alias("score")],
        )
        self.history = user_item_csr(ranked, ranked["score"].to_numpy(), data.n_users, data.n_items)
        return self

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """Popularity scores, overwritten by history scores on the user's own items."""
        base = np.tile(self.fallback_scores.astype(np.float32), (len(user_rows), 1))
        h = self.history[user_rows].tocoo()
        base[h.row, h.col] = h.data
        return base

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"window_days": self.window_days}, {**self._common_arrays(), **csr_to_arrays("history", self.history)}

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**params)
        model._load_common(arrays)
        model.history = csr_from_arrays("history", arrays)
        return model
