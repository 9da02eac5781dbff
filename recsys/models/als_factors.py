"""Collaborative factors: implicit ALS user and item vectors as a feature artifact.

The factors come from :class:`~recsys.models.implicit_models.ALSRecommender` (the one ALS in
the project) fitted on a training window. What this module adds is what later stages need:
a pickle-free artifact, and a batched fold-in that gives any user (a new one, or a training
example's history as of an earlier day) a vector from their items without retraining.

Fold-in weights a new row with the *training* matrix's BM25 statistics (item idf, average row
length). Weighting a single row on its own, as a one-row matrix, makes every idf log(1/2) < 0
and flips the sign of the confidences.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp

from recsys.atomic import save_npz
from recsys.config import ALSConfig
from recsys.data.interactions import IdIndex, TrainingData
from recsys.models.implicit_models import ALSRecommender, solve_user_factors, weight_new_rows, weighting_stats
from recsys.models.serialization import load_npz


@dataclass
class ALSFactors:
    """ALS factors of one training window plus the statistics needed to fold new rows in.

    Attributes:
        config: the ALS settings used.
        user_ids: training users (rows of ``user_factors``).
        item_ids: the item universe (rows of ``item_factors``; zero rows for items never bought).
        user_factors: (n_users, f) float32.
        item_factors: (n_items, f) float32.
        idf: (n_items,) BM25/TF-IDF item idf of the training matrix.
        average_length: mean row sum of the training matrix.
    """

    config: ALSConfig
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    idf: np.ndarray
    average_length: float

    def __post_init__(self) -> None:
        self.user_index = IdIndex.shared(self.user_ids)  # usually the window's own indexes' ids
        self.item_index = IdIndex.shared(self.item_ids)

    @classmethod
    def fit(cls, data: TrainingData, config: ALSConfig, model: ALSRecommender | None = None) -> Self:
        """Fit ALS on ``data`` (or reuse a model already fitted on it) and keep its factors.

        Args:
            data: the training window.
            config: ALS settings (ignored when ``model`` is given).
            model: an ALSRecommender already fitted on ``data``.
        """
        if model is None:
            model = ALSRecommender(config).fit(data)
        idf, average_length = weighting_stats(data.user_items)
        return cls(
            model.config, data.user_index.ids, data.item_index.ids, model.user_factors, model.item_factors,
            idf.astype(np.float32), average_length,
        )

    @property
    def dim(self) -> int:
        """Number of latent factors."""
        return int(self.item_factors.shape[1])

    def weight_rows(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Confidence-weight user rows exactly as the training matrix was weighted."""
        return weight_new_rows(counts, self.config, self.idf, self.average_length)

    def fold_in(self, counts: sp.csr_matrix) -> np.ndarray:
        """User vectors for many interaction rows at once, item factors held fixed.

        Args:
            counts: (n, n_items) interaction counts over this artifact's item universe.

        Returns:
            (n, f) float32; rows without a known item are zero.
        """
        if counts.shape[1] != len(self.item_ids):
            raise ValueError(f"fold_in: rows have {counts.shape[1]} columns, the factors cover {len(self.item_ids)} items")
        return solve_user_factors(self.weight_rows(counts), self.item_factors, self.config)

    def fold_in_items(self, histories: list[list[str]]) -> np.ndarray:
        """Vectors for users given as lists of item ids (repeats add up, unknown ids are ignored)."""
        rows, cols = [], []
        for r, items in enumerate(histories):
            idx = self.item_index.lookup(items)
            idx = idx[idx >= 0]
            rows.extend([r] * len(idx))
            cols.extend(idx.tolist())
        counts = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), len(self.item_ids))
        )
        counts.sum_duplicates()
        return self.fold_in(counts)

    def user_vectors(self, user_ids: list[str]) -> np.ndarray:
        """Trained vectors of known users; zeros for unknown ones."""
        rows = self.user_index.lookup(user_ids)
        out = np.zeros((len(user_ids), self.dim), dtype=np.float32)
        out[rows >= 0] = self.user_factors[rows[rows >= 0]]
        return out

    def item_vectors(self, item_ids: list[str] | np.ndarray) -> np.ndarray:
        """Vectors of items in that order; zeros for items outside the training universe."""
        rows = self.item_index.lookup(list(item_ids))
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        out[rows >= 0] = self.item_factors[rows[rows >= 0]]
        return out

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (no pickle) atomically; the config travels as JSON inside it."""
        return save_npz(
            path,
            config=np.asarray([json.dumps(self.config.model_dump())]),
            user_ids=self.user_ids.astype(str),
            item_ids=self.item_ids.astype(str),
            user_factors=self.user_factors.astype(np.float32),
            item_factors=self.item_factors.astype(np.float32),
            idf=self.idf.astype(np.float32),
            average_length=np.asarray([self.average_length]),
        )

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read what :meth:`save` wrote.

        Raises:
            ValueError: the file lacks a field (the message names the file and the field).
        """
        path = Path(path)
        z = load_npz(path)
        fields = ("config", "user_ids", "item_ids", "user_factors", "item_factors", "idf", "average_length")
        missing = [f for f in fields if f not in z]
        if missing:
            raise ValueError(f"{path}: not an ALS factors file, missing {missing}")
        return cls(
            ALSConfig(**json.loads(str(z["config"][0]))), z["user_ids"], z["item_ids"], z["user_factors"],
            z["item_factors"], z["idf"], float(z["average_length"][0]),
        )
