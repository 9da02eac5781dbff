"""Collaborative-filtering baselines backed by the ``implicit`` library: ALS, BPR and item-kNN."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Generic, Self, TypeVar

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns and slows down with threaded BLAS

import warnings

import numpy as np
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from implicit.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import (
    BM25Recommender,
    ItemItemRecommender,
    bm25_weight,
    normalize,
    tfidf_weight,
)
from implicit.utils import ParameterWarning
from pydantic import BaseModel

from recsys.config import ALSConfig, BPRConfig, ItemKNNConfig
from recsys.data.interactions import TrainingData
from recsys.evaluation.metrics import top_k_indices
from recsys.models.base import Recommendations, ScoringRecommender
from recsys.models.serialization import csr_from_arrays, csr_to_arrays


def active_items(user_items: sp.csr_matrix) -> np.ndarray:
    """Columns (items) with at least one interaction.

    Args:
        user_items: users x items sparse matrix.

    Returns:
        The column indices, ascending.
    """
    return np.flatnonzero(np.diff(user_items.tocsc().indptr))


def fit_on_active_items(model: Any, user_items: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Fit an implicit factor model on interacted items only; never-bought items get zero vectors.

    Catalogue items without interactions carry no signal, and implicit's few conjugate-gradient
    steps would leave their random initial vectors half-shrunk, polluting every user's scores.

    Args:
        model: an unfitted implicit ALS or BPR model.
        user_items: users x items (weighted) CSR.

    Returns:
        (user_factors, item_factors) as float32, item rows aligned with ``user_items`` columns.
    """
    active = active_items(user_items)
    model.fit(user_items[:, active].tocsr(), show_progress=False)
    users = np.asarray(model.user_factors, dtype=np.float32)
    sub = np.asarray(model.item_factors, dtype=np.float32)
    items = np.zeros((user_items.shape[1], sub.shape[1]), dtype=np.float32)
    items[active] = sub
    return users, items


def confidence_weighting(user_items: sp.csr_matrix, scheme: str, k1: float = 100.0, b: float = 0.8) -> sp.csr_matrix:
    """Re-weight interaction counts (``none``, ``bm25`` or ``tfidf``) with users as the documents.

    Users as documents (row-length normalisation, item idf) is what implicit's ALS expects of a
    users x items matrix; weighting the transpose instead gave MAP@12 0.051 vs 0.118 on H&M.

    Args:
        user_items: users x items counts.
        scheme: weighting scheme.
        k1, b: BM25 parameters.

    Returns:
        users x items float32 CSR.
    """
    if scheme == "none":
        return user_items.astype(np.float32).tocsr()
    weighted = bm25_weight(user_items, K1=k1, B=b) if scheme == "bm25" else tfidf_weight(user_items)
    return weighted.tocsr().astype(np.float32)


def weighting_stats(user_items: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """(item idf, average row length) of a training matrix: what weighting a new row needs.

    Args:
        user_items: the training users x items counts.

    Returns:
        (idf per item as ``log(n_users) - log1p(df)``, mean row sum; 1.0 when there are no users).
    """
    n_users = user_items.shape[0]
    df = np.bincount(user_items.tocoo().col, minlength=user_items.shape[1])
    idf = np.log(max(n_users, 1)) - np.log1p(df)
    return idf, float(np.asarray(user_items.sum(axis=1)).mean()) if n_users else 1.0


def weight_new_rows(counts: sp.csr_matrix, config: ALSConfig, idf: np.ndarray, average_length: float) -> sp.csr_matrix:
    """Confidence-weight new users' count rows exactly as their rows were weighted in training.

    BM25/TF-IDF need the training matrix's item idf and average row length (see
    :func:`weighting_stats`); weighting a lone row by itself gives a negative idf (log 1 - log 2)
    and NaN vectors.

    Args:
        counts: new users x items counts.
        config: the weighting scheme and BM25 parameters.
        idf: training item idf.
        average_length: training average row length.

    Returns:
        users x items float32 CSR, weighted like the training rows.
    """
    x = counts.tocsr().astype(np.float32).copy()
    if config.weighting == "none":
        return x
    row_of = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    item_idf = idf[x.indices]
    if config.weighting == "tfidf":
        x.data = (np.sqrt(x.data) * item_idf).astype(np.float32)
        return x
    length_norm = (1.0 - config.bm25_b) + config.bm25_b * np.asarray(x.sum(axis=1)).ravel() / average_length
    x.data = (x.data * (config.bm25_k1 + 1.0) / (config.bm25_k1 * length_norm[row_of] + x.data) * item_idf).astype(np.float32)
    return x


FOLD_IN_PARALLEL_ROWS = 1024  # rows from which a fold-in solves on FOLD_IN_THREADS threads
FOLD_IN_THREADS = 2  # this project's machines have 2 cores; the two-tower's example fold-ins are 4M rows at the 100x rung


def solve_user_factors(weighted: sp.csr_matrix, item_factors: np.ndarray, config: ALSConfig) -> np.ndarray:
    """The ALS user step for many weighted rows at once (implicit's ``recalculate_user``), items fixed.

    Args:
        weighted: users x items confidence-weighted CSR.
        item_factors: (n_items, f) fixed item factors.
        config: regularisation and alpha of the model.

    Returns:
        (n, f) float32; rows without any interaction are zero.
    """
    from implicit.cpu.als import AlternatingLeastSquares as CpuALS

    out = np.zeros((weighted.shape[0], item_factors.shape[1]), dtype=np.float32)
    weighted = weighted.tocsr().copy()
    # implicit's solver expects positive confidences; bm25 idf is negative only for items bought
    # by more than half the users, which never happens in real catalogues but can in tiny tests.
    weighted.data = np.maximum(weighted.data, 1e-6)
    nonempty = np.flatnonzero(np.diff(weighted.indptr))
    if len(nonempty):
        # Each row is its own Cholesky solve, so threads change no value; a request's single row
        # stays on one thread (starting a pool costs more than the solve).
        threads = FOLD_IN_THREADS if len(nonempty) >= FOLD_IN_PARALLEL_ROWS else 1
        solver = CpuALS(factors=item_factors.shape[1], regularization=config.regularization, alpha=config.alpha, num_threads=threads)
        solver.item_factors = item_factors
        out[nonempty] = solver.recalculate_user(nonempty, weighted[nonempty])
    return out


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class FactorRecommender(ScoringRecommender, Generic[ConfigT]):
    """Shared scoring and storage for matrix-factorisation models (score = user . item).

    Args:
        config: the model's settings (default: ``config_class()``).
    """

    config_class: type[ConfigT]
    user_factors: np.ndarray
    item_factors: np.ndarray

    def __init__(self, config: ConfigT | None = None):
        self.config: ConfigT = config or self.config_class()

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """User factors times item factors, in float64."""
        # float64: float32 products are exact in float64, so a user's scores (and the order of
        # near-ties) do not depend on how many users share the matrix product (batch vs serving).
        factors64 = self._of_item_factors("float64", lambda f: f.astype(np.float64))
        return self.user_factors[user_rows].astype(np.float64) @ factors64.T

    # A request for a handful of users (serving asks for one) screens one user at a time.
    SCREEN_MAX_USERS = 8
    SCREEN_BLOCK_FLOATS = 2**25  # the float32 (users x items) block of one batch screening: 128 MB

    def top_rows(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False, batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Top-k item rows per user: the lists of the float64 product of :meth:`score_users` (scores to float64 rounding).

        Known users (``exclude_seen`` off) are screened in float32 and only their possible top-k
        items rescored in float64 (:meth:`top_items`, :meth:`top_items_batch`): the product is
        bound by memory, and reading the float32 factors once instead of a float64 copy took one
        H&M customer from 13.3 to 5.7 ms over 105k items. Unknown users get the popularity fallback.

        Args:
            user_ids: external user ids (unknown users get the popularity fallback).
            k: list length.
            exclude_seen: drop items the user interacted with in training.
            batch_size: most users per screening product on the batch path.

        Returns:
            (item rows per user, float64 scores per user), best first.
        """
        if exclude_seen or k <= 0 or self.item_factors.dtype != np.float32:
            return super().top_rows(user_ids, k, exclude_seen, batch_size)
        ids = list(user_ids)
        rows = self.user_index.lookup(ids)
        out_rows, out_scores = super().top_rows([ids[p] for p in np.flatnonzero(rows < 0)], k) if (rows < 0).any() else ([], [])
        fallback = iter(zip(out_rows, out_scores))
        items: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        known = np.flatnonzero(rows >= 0)
        if len(known) <= self.SCREEN_MAX_USERS:
            found = [self.top_items(int(rows[p]), k) for p in known]
        else:
            step = max(1, min(batch_size, self.SCREEN_BLOCK_FLOATS // max(len(self.item_factors), 1)))
            found = [hit for lo in range(0, len(known), step) for hit in self.top_items_batch(rows[known[lo : lo + step]], k)]
        hits = iter(found)
        for r in rows:
            top, top_scores = next(hits) if r >= 0 else next(fallback)
            items.append(np.asarray(top, dtype=np.int64))
            scores.append(top_scores)
        return items, scores

    def top_items(self, user_row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One known user's top-k item rows and float64 scores: the items and order of :meth:`score_users`.

        Every item is screened with float32 scores; each differs from its float64 score by at most
        ``bound`` (the rounding-error bound of a float32 dot product of this length, through
        Cauchy-Schwarz, whatever the order of the sum), so an item whose float32 score is more than
        ``2 * bound`` below the k-th best cannot be in the top k. The few items that can are
        rescored in float64 and ordered by :func:`~recsys.evaluation.metrics.top_k_indices`
        (score, then lower row). The rescored values are row-wise sums, the same for an item
        whichever items are rescored with it, so :meth:`top_items_batch` gives the same lists;
        they agree with :meth:`score_users` (a BLAS product) to float64 rounding.

        Never-bought items have all-zero factors (``fit_on_active_items``) and score exactly 0, and
        on a big catalogue they are most items (212k of 256k on the 10x log), whose equal scores
        made the partition ~8 ms a user. Only items with factors are screened; the zero items are
        added back for a user whose k-th best score is not above 0.

        Args:
            user_row: the user's row in ``user_index``.
            k: how many items (clipped to the catalogue).

        Returns:
            (item rows, float64 scores), best first.
        """
        user = self.user_factors[user_row]
        active = self._active_items()
        return self._rescored(self._active_factors() @ user, active, user, k)

    def top_items_batch(self, user_rows: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`top_items` of many known users, screened by one float32 matrix product.

        Args:
            user_rows: rows in ``user_index``.
            k: how many items per user.

        Returns:
            One (item rows, float64 scores) per user, best first.
        """
        users = self.user_factors[user_rows]
        active = self._active_items()
        screened = users @ self._active_factors().T  # float32, (users, items with factors)
        return [self._rescored(screened[j], active, users[j], k) for j in range(len(users))]

    def _active_items(self) -> np.ndarray:
        """Rows of the items whose factors are not all zero, ascending."""
        return self._of_item_factors("active", lambda f: np.flatnonzero(np.any(f != 0, axis=1)))

    def _active_factors(self) -> np.ndarray:
        return self._of_item_factors("active_factors", lambda f: np.ascontiguousarray(f[self._active_items()]))

    def _rescored(self, screened: np.ndarray, active: np.ndarray, user: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The float64 top k of one user from float32 screening scores of the ``active`` item rows (see :meth:`top_items`)."""
        n_all = len(self.item_factors)
        k = min(k, n_all)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        user64 = user.astype(np.float64)
        if len(active) >= k:
            n = len(screened)
            kth = float(np.partition(screened, n - k)[n - k])
            # gamma_d = d u / (1 - d u) for float32 (u = 2^-24) plus the same for float64, times 4 for
            # the threshold's own rounding and slack; |sum x_i y_i| terms bounded by |user| * max |item|.
            d = user.shape[0]
            gamma = d * 2.0**-24 / (1 - d * 2.0**-24) + d * 2.0**-53
            max_item_norm = self._of_item_factors("max_norm", lambda f: float(np.sqrt(np.einsum("ij,ij->i", f, f, dtype=np.float64).max(initial=0.0))))
            bound = 4 * gamma * float(np.linalg.norm(user64)) * max_item_norm
            rows = active[np.flatnonzero(screened.astype(np.float64) >= kth - 2 * bound)]  # ascending, so ties keep going to the lower row
            # A row-wise sum, not a BLAS product: its value depends on the item's factors alone, not on
            # where the item sits among the rescored rows (BLAS gave equal items different last bits),
            # so one user alone and the same user in a batch get the same list, ties included.
            exact = (self.item_factors[rows].astype(np.float64) * user64).sum(axis=1)
            order = top_k_indices(exact, k)
            if exact[order[-1]] > 0 or len(active) == n_all:  # no zero-factor item (score 0) can enter
                return rows[order], exact[order]
        # Every item, zero rows included, by the same row-wise sums (in blocks: no catalogue-sized float64 copy).
        exact = np.concatenate(
            [(self.item_factors[lo : lo + 8192].astype(np.float64) * user64).sum(axis=1) for lo in range(0, n_all, 8192)]
        )
        order = top_k_indices(exact, k)
        return order, exact[order]

    def _of_item_factors(self, name: str, compute: Callable[[np.ndarray], Any]) -> Any:
        """``compute(item_factors)``, cached until ``item_factors`` is replaced (refit, or a test swapping it)."""
        cache = self.__dict__.setdefault("_item_factor_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] is not self.item_factors:
            hit = cache[name] = (self.item_factors, compute(self.item_factors))
        return hit[1]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {**self._common_arrays(), "user_factors": self.user_factors, "item_factors": self.item_factors}
        return self.config.model_dump(), arrays

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(cls.config_class(**params))
        model._load_common(arrays)
        model.user_factors, model.item_factors = arrays["user_factors"], arrays["item_factors"]
        return model


class ALSRecommender(FactorRecommender[ALSConfig]):
    """implicit's Alternating Least Squares on (optionally BM25-weighted) confidences.

    Args:
        config: factors, iterations, regularisation, alpha, weighting and seed.
    """

    name = "als"
    config_class = ALSConfig

    def _new_model(self) -> AlternatingLeastSquares:
        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors, regularization=c.regularization, alpha=c.alpha, iterations=c.iterations,
            random_state=c.seed, calculate_training_loss=False,
        )

    def weighted(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """``user_items`` with the configured confidence weighting (as the model is fitted on)."""
        c = self.config
        return confidence_weighting(user_items, c.weighting, c.bm25_k1, c.bm25_b)

    def fit(self, data: TrainingData) -> Self:
        """Fit ALS on the weighted training matrix (items never bought get zero factors)."""
        self._fit_common(data)
        self.user_factors, self.item_factors = fit_on_active_items(self._new_model(), self.weighted(data.user_items))
        return self

    def fold_in(self, item_ids: list[str], weights: list[float] | None = None) -> np.ndarray:
        """A user vector for a new user from their interactions, without retraining.

        Solves the same regularised least-squares step ALS uses for known users (implicit's
        ``recalculate_user``), with the item factors held fixed.

        Args:
            item_ids: items the new user interacted with (unknown ids are ignored).
            weights: interaction counts; default 1 each.

        Returns:
            (factors,) float32 user vector (zeros when no item is known).
        """
        rows = self.item_index.lookup(item_ids)
        w = np.ones(len(item_ids), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        keep = rows >= 0
        row = sp.csr_matrix((w[keep], (np.zeros(int(keep.sum()), dtype=np.int64), rows[keep])), shape=(1, len(self.item_index)))
        row.sum_duplicates()
        return solve_user_factors(self.weight_new_rows(row), self.item_factors, self.config)[0]

    def weight_new_rows(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """New users' count rows weighted like training rows (statistics from the training matrix)."""
        cached = getattr(self, "_weighting_stats", None)
        if cached is None or cached[0] is not self.seen:
            cached = self._weighting_stats = (self.seen, *weighting_stats(self.seen))
        return weight_new_rows(rows, self.config, cached[1], cached[2])


class BPRRecommender(FactorRecommender[BPRConfig]):
    """implicit's Bayesian Personalised Ranking (factors include implicit's item-bias column).

    Args:
        config: factors, learning rate, regularisation, iterations and seed.
    """

    name = "bpr"
    config_class = BPRConfig

    def fit(self, data: TrainingData) -> Self:
        """Fit single-threaded BPR on the binarised training matrix (items never bought get zero factors)."""
        self._fit_common(data)
        c = self.config
        model = BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed,
            num_threads=1,  # implicit's multi-threaded (Hogwild) SGD is not reproducible for a seed
        )
        binary = (data.user_items > 0).astype(np.float32).tocsr()
        self.user_factors, self.item_factors = fit_on_active_items(model, binary)
        return self


class ItemKNNRecommender(ScoringRecommender):
    """implicit's item-item nearest neighbours: score = user's items x item similarity (top-K per item).

    Args:
        config: similarity measure and neighbour count.
    """

    name = "itemknn"

    def __init__(self, config: ItemKNNConfig | None = None):
        self.config = config or ItemKNNConfig()

    def fit(self, data: TrainingData) -> Self:
        """Compute the top-``neighbours`` item-item similarity from the training matrix.

        implicit's cosine, BM25 or TF-IDF weighting is applied to the whole matrix, as its own
        recommenders do, but the neighbour search runs over the items that have any interaction:
        implicit preallocates ``neighbours`` slots of 24 bytes for every item, so the 619k-item
        catalogue of the 100x rung cost 1.5 GB of slots and ~3 GB in all while it ran, for the
        105k items that were bought. Items without interactions have no neighbours and are no
        item's neighbour, and the others keep their order, so the matrix is the same.
        """
        self._fit_common(data)
        counts = data.user_items
        if self.config.similarity == "cosine":
            weighted = normalize(counts.T).T
        elif self.config.similarity == "tfidf":
            weighted = normalize(tfidf_weight(counts.T)).T
        else:
            defaults = BM25Recommender()  # implicit's own K1 and B
            weighted = bm25_weight(counts.T, defaults.K1, defaults.B).T
        weighted = sp.csc_matrix(weighted)
        active = np.flatnonzero(np.diff(weighted.indptr))  # items with a stored entry
        knn = ItemItemRecommender(K=self.config.neighbours)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ParameterWarning)  # implicit warns about the matrix type it is handed
            knn.fit(weighted[:, active].tocsr(), show_progress=False)
        found = knn.similarity.tocoo()
        self.similarity = sp.csr_matrix(
            (found.data.astype(np.float32), (active[found.row], active[found.col])), shape=(data.n_items, data.n_items)
        )
        return self

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """Seen items times item similarity, plus a tiny popularity tie-break."""
        s = (self.seen[user_rows] @ self.similarity).toarray()
        # A user whose items have no neighbours scores all zeros: add popularity as a tiny tie-break.
        return s + 1e-6 * self.fallback_scores[None, :]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.config.model_dump(), {**self._common_arrays(), **csr_to_arrays("similarity", self.similarity)}

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(ItemKNNConfig(**params))
        model._load_common(arrays)
        model.similarity = csr_from_arrays("similarity", arrays)
        return model
