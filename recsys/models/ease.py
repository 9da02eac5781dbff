"""EASE: the embarrassingly shallow autoencoder (Steck, WWW 2019), a closed-form item-item model.

``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` and a zero diagonal; a user's scores are
``x_u B``. One dense ``n_items x n_items`` solve, so it suits catalogues of up to a few ten
thousand items (films, a grocery assortment), where it is one of the strongest baselines known.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from recsys.config import ConfigError, EASEConfig
from recsys.data.interactions import TrainingData
from recsys.models.base import ScoringRecommender


class EASERecommender(ScoringRecommender):
    """Closed-form item-item regression on the binarised user x item matrix.

    Args:
        config: the ridge penalty and the largest catalogue it accepts.
    """

    name = "ease"

    def __init__(self, config: EASEConfig | None = None):
        self.config = config or EASEConfig()

    def fit(self, data: TrainingData) -> Self:
        """Solve for the item-item weights on ``data``.

        Args:
            data: the training window.

        Returns:
            self.

        Raises:
            ConfigError: the catalogue has more than ``max_items`` items.
        """
        if data.n_items > self.config.max_items:
            raise ConfigError(
                f"models.ease: {data.n_items:,} items exceed max_items={self.config.max_items:,} (EASE needs a dense "
                "n_items x n_items matrix); leave the ease source out for this catalogue"
            )
        self._fit_common(data)
        x = data.user_items.copy()
        x.data = np.ones_like(x.data, dtype=np.float32)
        gram = np.asarray((x.T @ x).todense(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)
        return self

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """(len(user_rows), n_items) scores ``x_u B`` for known users."""
        x = self.seen[user_rows].copy()
        x.data = np.ones_like(x.data, dtype=np.float32)
        return np.asarray(x @ self.weights)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.config.model_dump(), {**self._common_arrays(), "weights": self.weights}

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(EASEConfig(**params))
        model._load_common(arrays)
        model.weights = arrays["weights"]
        return model
