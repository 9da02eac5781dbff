"""A content-only recommender: items whose content vectors resemble the user's recent purchases.

For each user, the last ``history_items`` distinct items are weighted by recency
(``0.5 ** (age_days / half_life_days)``, ages counted from the user's most recent item). A candidate's score blends

- centroid similarity: cosine to the weighted mean of the history vectors, and
- max similarity: the highest recency-weighted cosine to any single history item,

as ``centroid_weight * centroid + (1 - centroid_weight) * max``. The max term keeps a user
with two unrelated tastes (jeans and swimwear) from being averaged into neither; an item the
user bought has similarity 1 to itself, so re-purchases rank high, as they do in the data.
Vectors come from the content stage (:class:`recsys.vectors.ItemVectors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from recsys.config import ProjectConfig
from recsys.content_config import RecommenderSettings
from recsys.data.interactions import TrainingData
from recsys.data.stats import item_counts, ranked_user_items, user_item_csr
from recsys.models.base import ScoringRecommender
from recsys.models.serialization import csr_from_arrays, csr_to_arrays
from recsys.vectors import ItemVectors, l2_normalise


class ContentRecommender(ScoringRecommender):
    """Similarity of every item to the user's recent history in content space.

    Args:
        vectors: the catalogue's content vectors (or a path to them).
        settings: history length, recency half-life, centroid/max blend, which vector.
    """

    name = "content"
    score_block_floats = 64 * 2**20  # the (history items x catalogue) float32 block of one scoring group: 256 MB

    def __init__(self, vectors: ItemVectors | str | Path, settings: RecommenderSettings = RecommenderSettings()):
        if not isinstance(vectors, ItemVectors):
            path = Path(vectors)
            if not path.is_file():
                raise FileNotFoundError(f"content vectors not found at {path}: run `recsys content` first")
            vectors = ItemVectors.load(path)
        self.vectors: ItemVectors | None = vectors
        self.encoder = vectors.encoder
        self.settings = settings

    def fit(self, data: TrainingData) -> Self:
        """Align the content vectors with ``data``'s items and weight each user's latest items by recency.

        Raises:
            ValueError: the model was loaded from disk without its source vectors.
        """
        if self.vectors is None:
            raise ValueError("this ContentRecommender was loaded without its source vectors and cannot be refitted")
        self._fit_common(data)
        # Items without content vectors (not in the vector file) get zero rows: they score 0.
        self.item_vectors = l2_normalise(self.vectors.aligned(data.item_index.ids, self.settings.vector))
        as_of = data.as_of
        # Ages counted from each user's most recent item (which weighs 1), so the weights never all
        # underflow to 0 however old the history is; scoring divides by the max, so only ratios matter.
        age = ((pl.lit(as_of) - pl.col("last")).dt.total_seconds() / 86400.0).clip(lower_bound=0.0)
        recent = ranked_user_items(
            data.encoded,
            data.n_users,
            [pl.col("timestamp").max().alias("last")],
            ["last", "item_idx"],
            [True, False],
            [(age - age.min().over("user_idx")).alias("age_days")],
            max_rank=self.settings.history_items,
        )
        weights = np.power(0.5, recent["age_days"].to_numpy() / self.settings.half_life_days).astype(np.float32)
        self.history = user_item_csr(recent, weights, data.n_users, data.n_items)
        # Cosines lie in [-1, 1]: an offset of 2 ranks every item not sold recently below every one that was.
        self.offset = np.zeros(data.n_items, dtype=np.float32)
        if self.settings.recent_days:
            sold = item_counts(data, self.settings.recent_days) > 0
            self.offset[~sold] = -2.0
        return self

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """Blend of cosine to the weighted history centroid and the max weighted cosine to a history item.

        Items not sold in the last ``recent_days`` (when set) get -2, ranking them below all others.
        Users are scored in groups sharing one product of their history items with the catalogue:
        one user at a time re-read the whole item matrix per user (~45 ms a user on 105k items).
        """
        E = self.item_vectors
        out = np.zeros((len(user_rows), E.shape[0]), dtype=np.float32)  # users without history: 0 + offset
        cw = self.settings.centroid_weight
        indptr, indices, data = self.history.indptr, self.history.indices, self.history.data
        lengths = indptr[user_rows + 1] - indptr[user_rows]
        budget = max(self.settings.history_items, self.score_block_floats // max(E.shape[0], 1))  # history items per group
        lo = 0
        while lo < len(user_rows):
            hi = lo + 1  # a group: consecutive users whose history items fit the budget (at least one user)
            while hi < len(user_rows) and lengths[lo : hi + 1].sum() <= budget:
                hi += 1
            items = np.unique(np.concatenate([indices[indptr[r] : indptr[r + 1]] for r in user_rows[lo:hi]]))
            sims = E[items] @ E.T  # (group's distinct history items, n_items)
            centroids = np.zeros((hi - lo, E.shape[1]), dtype=np.float32)  # stays 0 for users without history
            scratch = np.empty(E.shape[0], dtype=np.float32)
            for j in range(lo, hi):
                r = user_rows[j]
                own, w = indices[indptr[r] : indptr[r + 1]], data[indptr[r] : indptr[r + 1]]
                if not len(own):
                    continue
                top = w.max()
                w = w / top if top > 0 else np.ones_like(w)  # all 0: a model saved before weights were relative
                centroids[j - lo] = l2_normalise((w @ E[own])[None, :])[0]
                # A running max over the user's rows instead of a (history x catalogue) gather, its
                # weighted copy and their max: 7.7 against 38 ms a user for 20-item histories over 256k
                # items, no 50 MB temporaries at 619k; the same float32 products, so the same scores.
                best = out[j]
                rows = np.searchsorted(items, own)
                np.multiply(sims[rows[0]], w[0], out=best)
                for row, weight in zip(rows[1:], w[1:], strict=True):
                    np.maximum(best, np.multiply(sims[row], weight, out=scratch), out=best)
                best *= 1.0 - cw
            out[lo:hi] += cw * (centroids @ E.T)
            lo = hi
        return out + self.offset

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {"settings": self.settings.model_dump(), "encoder": self.encoder}
        # float32 (not float16): a loaded model must reproduce the fitted model's scores exactly.
        arrays = {**self._common_arrays(), **csr_to_arrays("history", self.history), "item_vectors": self.item_vectors, "offset": self.offset}
        return params, arrays

    @classmethod
    def from_config(cls, config: ProjectConfig) -> "ContentRecommender":
        """Built from the project's content vectors (``content.vectors_path`` below the work dir)."""
        path = Path(config.content.vectors_path)
        return cls(path if path.is_absolute() else config.work_path / path, config.content.recommender)

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls.__new__(cls)
        model.vectors, model.encoder = None, params["encoder"]
        model.settings = RecommenderSettings.model_validate(params["settings"])
        model._load_common(arrays)
        model.history = csr_from_arrays("history", arrays)
        model.item_vectors = arrays["item_vectors"].astype(np.float32)
        model.offset = arrays["offset"]
        return model
