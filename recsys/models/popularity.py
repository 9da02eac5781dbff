"""Recent popularity: the same list for everybody, ranked by purchases in the last days."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from recsys.data.interactions import TrainingData
from recsys.evaluation.metrics import top_k_indices
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

    def top_rows(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False, batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:meth:`ScoringRecommender.top_rows` with the catalogue ranked once, not once per user.

        Every known user gets the same scores, so the lists are one ranking, less each user's own
        items under ``exclude_seen``: per-user partitions of the catalogue cost 124 s for 10,000
        users over 619k items (the 100x rung's evaluation).

        Returns:
            (item rows per user, float64 scores per user), best first.
        """
        if k <= 0:
            return super().top_rows(user_ids, k, exclude_seen, batch_size)
        ids = list(user_ids)
        rows = self.user_index.lookup(ids)
        known = np.flatnonzero(rows >= 0)
        seen = self.seen_rows(rows[known]) if exclude_seen else []
        scores = self.fallback_scores.astype(np.float32).astype(np.float64)  # what score_users gives each known user
        order = top_k_indices(scores, k + max((len(s) for s in seen), default=0)).astype(np.int64)
        out_rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(ids)
        out_scores: list[np.ndarray] = [np.zeros(0, dtype=np.float64)] * len(ids)
        shared = order[:k]
        for j, p in enumerate(known):
            top = order[~np.isin(order, seen[j])][:k] if exclude_seen else shared
            out_rows[p], out_scores[p] = top, scores[top]
        unknown = np.flatnonzero(rows < 0)
        if len(unknown):
            fallback_rows, fallback_scores = super().top_rows([ids[p] for p in unknown], k, exclude_seen, batch_size)
            for p, r, s in zip(unknown, fallback_rows, fallback_scores):
                out_rows[p], out_scores[p] = r, s
        return out_rows, out_scores

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"window_days": self.window_days}, self._common_arrays()

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**params)
        model._load_common(arrays)
        return model
