"""Batches as KeyedJaggedTensors: query rows (user id + history bags) and item rows (id + metadata).

A batch row carries a query, an item, or both. Rows ``0..n_query-1`` hold the queries; item
rows are listed separately (positives first, then extra negatives), and the KJT has
``max(n_query, n_items)`` rows, with zero-length bags where a side is absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchrec import KeyedJaggedTensor

from recsys.two_tower.features import ItemTable, Queries
from recsys.two_tower.model import HIST_ITEM, ITEM_ID, USER_ID, TowerSpec


@dataclass
class Batch:
    """Model inputs for one step.

    Attributes:
        features: the KJT over ``spec.keys``.
        user_dense: (rows, user_dense_dim).
        item_dense: (rows, item_dense_dim).
        n_queries: rows holding a query.
        item_rows: catalogue rows of the item side (length = rows holding an item).
    """

    features: KeyedJaggedTensor
    user_dense: torch.Tensor
    item_dense: torch.Tensor
    n_queries: int
    item_rows: np.ndarray


def make_batch(
    spec: TowerSpec,
    queries: Queries | None,
    items: ItemTable,
    item_rows: np.ndarray,
    drop_item_id: np.ndarray | None = None,
    drop_user_id: np.ndarray | None = None,
    cold_dense: np.ndarray | None = None,
) -> Batch:
    """Build the KJT and dense tensors for queries and/or items.

    Args:
        spec: the tower spec (key order).
        queries: query rows (None for an item-only batch).
        items: the item feature table.
        item_rows: catalogue rows for the item side (may be empty for a query-only batch).
        drop_item_id: bool per item row; True hides the item id (cold-start training). Items not
            ``known`` (never bought in training) always have their id hidden.
        cold_dense: bool per item row; True also zeroes its ALS factors and price features.
        drop_user_id: bool per query; True hides the user id.

    Returns:
        The batch.
    """
    nq = len(queries) if queries is not None else 0
    ni = len(item_rows)
    rows = max(nq, ni)
    values: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    lengths: list[np.ndarray] = []

    def add(vals: np.ndarray, lens: np.ndarray, w: np.ndarray | None = None) -> None:
        full = np.zeros(rows, dtype=np.int64)
        full[: len(lens)] = lens
        values.append(vals.astype(np.int64))
        lengths.append(full)
        weights.append(np.ones(len(vals), dtype=np.float32) if w is None else w.astype(np.float32))

    for key in spec.keys:
        if key == USER_ID:
            if queries is None:
                add(np.empty(0), np.empty(0))
                continue
            show = queries.user_rows >= 0
            if drop_user_id is not None:
                show &= ~drop_user_id
            add(queries.user_rows[show], show.astype(np.int64))
        elif key == HIST_ITEM or key.startswith("hist_cat_"):
            if queries is None:
                add(np.empty(0), np.empty(0))
                continue
            lens = np.diff(queries.hist_indptr)
            if key == HIST_ITEM:
                vals = queries.hist_items
            else:
                c = spec.categories.index(key.removeprefix("hist_cat_"))
                vals = items.categories[queries.hist_items, c]
            add(vals, lens, queries.hist_weights)
        elif key == ITEM_ID:
            show = items.known[item_rows].copy()
            if drop_item_id is not None:
                show &= ~drop_item_id
            add(item_rows[show], show.astype(np.int64))
        else:
            c = spec.categories.index(key.removeprefix("cat_"))
            add(items.categories[item_rows, c], np.ones(ni, dtype=np.int64))

    kjt = KeyedJaggedTensor(
        keys=spec.keys,
        values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)),
        weights=torch.from_numpy(np.concatenate(weights)),
    )
    user_dense = np.zeros((rows, spec.user_dense_dim), dtype=np.float32)
    if queries is not None:
        user_dense[:nq] = queries.dense
    item_dense = np.zeros((rows, spec.item_dense_dim), dtype=np.float32)
    item_dense[:ni] = items.dense[item_rows]
    if cold_dense is not None and cold_dense.any():
        # Simulate a cold item completely: besides its id, hide what only purchases give it
        # (ALS factors, price), so the tower learns to score from content and metadata alone.
        item_dense[np.flatnonzero(cold_dense), spec.content_dim :] = 0.0
    return Batch(kjt, torch.from_numpy(user_dense), torch.from_numpy(item_dense), nq, item_rows)
