"""Candidate sources: each turns a batch of users into one ranked item list per user.

history      the user's own purchases, latest first (re-purchase is the strongest signal here)
two_tower    nearest items to the user-tower vector in the FAISS item index
als          implicit ALS top items
copurchase   item-kNN (co-purchase) neighbours of the user's most recent items
content      items whose content vector is closest to the centroid of the recent items
same_product other variants (colours, sizes) of products the user bought, most popular first
ease         EASE's closed-form item-item scores of the user's items (catalogues up to ~30k items)
popularity   the most bought items of the last days (the same list for everybody)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.candidates.row_lists import RowLists
from recsys.evaluation.metrics import top_k_indices
from recsys.index.faiss_index import ItemIndex
from recsys.models.base import ScoringRecommender
from recsys.models.history import HistoryRecommender
from recsys.models.implicit_models import ItemKNNRecommender

_NO_ROWS = np.zeros(0, dtype=np.int64)


def recent_items(history: HistoryRecommender, user_rows: np.ndarray, n: int) -> sp.csr_matrix:
    """(len(user_rows), n_items) weights of each user's ``n`` latest items (1, 1/2, 1/3 ... by recency).

    Args:
        history: the fitted history model.
        user_rows: user rows of ``history``; unknown users (row -1) get empty rows.
        n: how many latest items per user.

    Returns:
        A sparse float32 matrix, one row per entry of ``user_rows``.
    """
    data, indices, indptr = [], [], [0]
    for r in user_rows:
        if r < 0:
            indptr.append(indptr[-1])
            continue
        start, end = history.history.indptr[r], history.history.indptr[r + 1]
        cols, vals = history.history.indices[start:end], history.history.data[start:end]
        order = np.lexsort((cols, -vals))[:n]  # history scores are 1 + 1/(rank+1): higher = more recent
        data.extend((vals[order] - 1.0).tolist())
        indices.extend(cols[order].tolist())
        indptr.append(indptr[-1] + len(order))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(user_rows), history.history.shape[1]),
    )


def history_rows(history: HistoryRecommender, user_ids: Sequence[str], k: int) -> RowLists:
    """The user's purchased items, latest first (no popularity fill).

    Args:
        history: the fitted history model.
        user_ids: users; unknown ones get an empty list.
        k: list length.

    Returns:
        Up to ``k`` item rows per user.
    """
    rows = history.user_index.lookup(list(user_ids))
    indptr, indices, data = history.history.indptr, history.history.indices, history.history.data
    lists = []
    for r in rows:
        if r < 0:
            lists.append(_NO_ROWS)
            continue
        cols, vals = indices[indptr[r] : indptr[r + 1]], data[indptr[r] : indptr[r + 1]]
        lists.append(cols[np.lexsort((cols, -vals))[:k]])
    return RowLists.from_arrays(lists)


def model_rows(model: ScoringRecommender, user_ids: Sequence[str], k: int, row_map: np.ndarray | None = None) -> RowLists:
    """Top-k of any scoring recommender (ALS, BPR ...), seen items kept.

    Args:
        model: a fitted scoring recommender.
        user_ids: users.
        k: list length.
        row_map: the catalogue row of each of the model's item rows (None: the same rows).

    Returns:
        ``k`` item rows per user.
    """
    lists = RowLists.from_arrays(model.top_rows(list(user_ids), k)[0])
    return lists if row_map is None else lists.mapped(row_map)


def index_rows(index: ItemIndex, user_vectors: np.ndarray, k: int, row_map: np.ndarray | None = None, keep: np.ndarray | None = None) -> RowLists:
    """Nearest items to given user vectors in a FAISS index (e.g. two-tower user vectors).

    A batch of users (training folds, the precomputed table) is searched exactly by matrix
    products (:meth:`ItemIndex.search_exact`); a request's single user walks the index.

    Args:
        index: the item index.
        user_vectors: (n_users, d) query vectors.
        k: list length.
        row_map: the catalogue row of each index row (None: the same rows).
        keep: (n_users,) bool; users with False get an empty list.

    Returns:
        The nearest item rows per user.
    """
    found = RowLists.from_matrix(index.search_rows(user_vectors, k, batch_exact=True), keep)
    return found if row_map is None else found.mapped(row_map)


def copurchase_rows(
    knn: ItemKNNRecommender, history: HistoryRecommender, user_ids: Sequence[str], k: int, recent: int, row_map: np.ndarray | None = None
) -> RowLists:
    """Co-purchase neighbours of the latest ``recent`` items, weighted by recency.

    Items with no neighbour score are not proposed (the list may be shorter than k).

    Args:
        knn: the fitted item-kNN model (its item-item similarity).
        history: the history model (recent items).
        user_ids: users; unknown ones get an empty list.
        k: list length.
        recent: how many latest items to take the neighbours of.
        row_map: the catalogue row of each of the kNN model's item rows (None: the same rows).

    Returns:
        Up to ``k`` item rows per user.
    """
    rows = history.user_index.lookup(list(user_ids))
    lists = []
    for start in range(0, len(rows), 512):
        # The product stays sparse (a few hundred neighbours per user, not the catalogue): rank
        # each row's stored scores, best first, ties to the lower item row.
        scores = (recent_items(history, rows[start : start + 512], recent) @ knn.similarity).tocsr()
        for j in range(scores.shape[0]):
            lo, hi = scores.indptr[j], scores.indptr[j + 1]
            cols, vals = scores.indices[lo:hi], scores.data[lo:hi].astype(np.float32)
            keep = vals > 0
            cols, vals = cols[keep], vals[keep]
            lists.append(cols[np.lexsort((cols, -vals))[:k]])
    out = RowLists.from_arrays(lists)
    return out if row_map is None else out.mapped(row_map)


def content_rows(
    content: np.ndarray, index: ItemIndex, history: HistoryRecommender, user_ids: Sequence[str], k: int, recent: int, row_map: np.ndarray | None = None
) -> RowLists:
    """Items closest in content to the recency-weighted centroid of the user's latest items.

    Args:
        content: (n_items, d) content vectors aligned with the history model's item rows.
        index: FAISS index over the content vectors of the items that may be proposed.
        history: the history model (recent items).
        user_ids: users; one without history gets an empty list.
        k: list length.
        recent: how many latest items form the centroid.
        row_map: the catalogue row of each index row (None: the same rows).

    Returns:
        Up to ``k`` item rows per user.
    """
    rows = history.user_index.lookup(list(user_ids))
    weights = recent_items(history, rows, recent)
    centroid = np.asarray(weights @ content, dtype=np.float32)
    norms = np.linalg.norm(centroid, axis=1, keepdims=True)
    centroid = centroid / np.maximum(norms, 1e-12)
    return index_rows(index, centroid, k, row_map, keep=norms[:, 0] > 0)


def popularity_rows(model: ScoringRecommender, n_users: int, k: int) -> RowLists:
    """The recent-popularity ranking (``fallback_scores`` of any fitted scoring model), the same for every user.

    Args:
        model: a fitted scoring recommender.
        n_users: how many users.
        k: list length.

    Returns:
        The ``k`` most popular item rows, once per user.
    """
    # Computed once per model and k (serving asks for it per request).
    cache = model.__dict__.setdefault("_popularity_rows", {})
    key = (id(model.fallback_scores), k)
    if key not in cache or cache[key][0] is not model.fallback_scores:
        cache[key] = (model.fallback_scores, top_k_indices(model.fallback_scores, k).astype(np.int64))
    return RowLists.repeated(cache[key][1], n_users)


def popularity_ids(model: ScoringRecommender, k: int) -> list[str]:
    """The ``k`` most popular item ids of :func:`popularity_rows`.

    Args:
        model: a fitted scoring recommender.
        k: list length.

    Returns:
        The item ids, most popular first.
    """
    return model.item_index.ids[popularity_rows(model, 1, k).rows].tolist()


def product_groups(codes: Sequence[object], popularity: np.ndarray) -> tuple[np.ndarray, dict[object, np.ndarray]]:
    """Group item rows by product code.

    Args:
        codes: product code per item row (None: the item belongs to no group).
        popularity: score per item row (higher = more popular).

    Returns:
        (group id per item row, item rows of each group ordered by popularity, then row).
    """
    keys = list(codes)
    groups: dict[object, list[int]] = {}
    for row, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(row)
    ordered = {k: np.asarray(sorted(v, key=lambda r: (-popularity[r], r)), dtype=np.int64) for k, v in groups.items()}
    return np.asarray(keys, dtype=object), ordered


def same_product_rows(codes: np.ndarray, groups: dict[object, np.ndarray], history: HistoryRecommender, user_ids: Sequence[str], k: int) -> RowLists:
    """Other variants of the products in the user's history: latest product first, popular variants first.

    Args:
        codes: group id per item row (from :func:`product_groups`).
        groups: item rows of each group (from :func:`product_groups`).
        history: the history model.
        user_ids: users; unknown ones get an empty list.
        k: list length.

    Returns:
        Up to ``k`` item rows per user, none the user has bought.
    """
    rows = history.user_index.lookup(list(user_ids))
    lists = []
    for r in rows:
        items: list[int] = []
        if r >= 0:
            start, end = history.history.indptr[r], history.history.indptr[r + 1]
            cols, vals = history.history.indices[start:end], history.history.data[start:end]
            bought = set(cols.tolist())
            seen_groups: set[object] = set()
            for c in cols[np.lexsort((cols, -vals))]:
                key = codes[c]
                if key is None or key in seen_groups:
                    continue
                seen_groups.add(key)
                items.extend(int(x) for x in groups[key] if int(x) not in bought)
                if len(items) >= k:
                    break
        lists.append(np.asarray(items[:k], dtype=np.int64))
    return RowLists.from_arrays(lists)


# -- a visitor known only by the items of this visit (no fitted user row) ---------------------


def visitor_history_list(item_rows: np.ndarray, item_ids: np.ndarray) -> list[str]:
    """The visit's items, most recent first.

    Args:
        item_rows: the visit's item rows, oldest first.
        item_ids: item id per row.

    Returns:
        The item ids, most recent first.
    """
    return [str(item_ids[r]) for r in item_rows[::-1]]


def visitor_copurchase_list(knn: ItemKNNRecommender, item_rows: np.ndarray, k: int) -> list[str]:
    """Co-purchase neighbours of the visit's items (summed similarity; items with none are left out).

    Args:
        knn: the fitted item-kNN model.
        item_rows: the visit's item rows.
        k: list length.

    Returns:
        Up to ``k`` item ids.
    """
    scores = np.asarray(knn.similarity[item_rows].sum(axis=0)).ravel()
    return [str(knn.item_index.ids[r]) for r in top_k_indices(scores, k) if scores[r] > 0]


def visitor_vector_list(index: ItemIndex, vectors: np.ndarray, k: int) -> list[str]:
    """Nearest items to the mean of the visit's item vectors (content or two-tower item vectors).

    Args:
        index: the item index to search.
        vectors: (n, d) vectors of the visit's items.
        k: list length.

    Returns:
        Up to ``k`` item ids; empty if the mean vector is zero.
    """
    centroid = vectors.mean(axis=0, keepdims=True).astype(np.float32)
    norm = float(np.linalg.norm(centroid))
    return index.search_ids(centroid / norm, k)[0] if norm > 0 else []


def visitor_factor_list(item_factors: np.ndarray, user_vector: np.ndarray, item_ids: np.ndarray, k: int) -> list[str]:
    """Top items for a folded-in user vector (e.g. ALS ``fold_in`` of the visit's items).

    Args:
        item_factors: (n_items, d) item factors.
        user_vector: (d,) user vector; all zeros gives an empty list.
        item_ids: item id per row.
        k: list length.

    Returns:
        Up to ``k`` item ids by dot product.
    """
    if not np.any(user_vector):
        return []
    return [str(item_ids[r]) for r in top_k_indices(item_factors @ user_vector, k)]


def visitor_ease_list(weights: np.ndarray, item_rows: np.ndarray, item_ids: np.ndarray, k: int) -> list[str]:
    """EASE scores of the visit's items (the rows of the item-item weights summed), the visit's own items left out.

    Args:
        weights: (n_items, n_items) EASE item-item weights.
        item_rows: the visit's item rows.
        item_ids: item id per row.
        k: list length.

    Returns:
        Up to ``k`` item ids.
    """
    scores = weights[np.unique(item_rows)].sum(axis=0).astype(np.float64)
    scores[item_rows] = -np.inf
    return [str(item_ids[r]) for r in top_k_indices(scores, k) if np.isfinite(scores[r])]
