"""Recent popularity: the same list for everybody, ranked by purchases in the last days."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from recsys.data.interactions import TrainingData
from recsys.models.base import ScoringRecommender


class PopularityRecommender(ScoringRecommender):
    """Items ranked by interactions in the last ``window_days`` of training (all-time count breaks ties).

    Args:
        window_days: length of the recent window.
    """

    name = "popularity"

    def __init__(self, window_days: int = 2):
        self.window_days = window_days

    def fit(self, data: TrainingData) -> Self:
        """Count interactions in the last ``window_days`` of ``data``."""
        self._fit_common(data, fallback_days=self.window_days)
        return self

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """The popularity scores for every user (a read-only broadcast view)."""
        return np.broadcast_to(self.fallback_scores.astype(np.float32), (len(user_rows), len(self.fallback_scores)))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"window_days": self.window_days}, self._common_arrays()

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**params)
        model._load_common(arrays)
        return model
