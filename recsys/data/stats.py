"""Simple statistics of a training window, shared by baselines, features and serving."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.interactions import TrainingData


def item_counts(data: TrainingData, days: int | None = None) -> np.ndarray:
    """Interaction weights summed per item row of the window, optionally only its last ``days`` days.

    A weighted ``bincount`` of the encoded rows: a group-by on the item id strings held a 1.8 GB
    transient on the 100x rung's 20.6M-row window, and every model's fit counts the window.

    Args:
        data: the window (its rows before ``data.as_of``).
        days: count only rows in the ``days`` days before ``as_of``; None counts every row.

    Returns:
        float64 array of length ``data.n_items``.
    """
    frame = data.encoded
    if days is not None:
        frame = frame.filter(pl.col("timestamp") >= data.as_of - dt.timedelta(days=days), pl.col("timestamp") < data.as_of)
    frame = frame.select("item_idx", "weight").drop_nulls("item_idx")
    rows = frame["item_idx"].to_numpy()
    weights = frame["weight"].cast(pl.Float64).to_numpy()
    return np.bincount(rows, weights=weights, minlength=data.n_items)  # float64, as weighted bincounts are


def popularity_scores(counts: np.ndarray, tie_breaker: np.ndarray | None = None) -> np.ndarray:
    """Counts turned into strictly ordered scores in [0, 1): a tiny tie-breaker keeps ranks stable.

    Args:
        counts: per-item counts.
        tie_breaker: per-item values that order equal counts (adds at most 1e-9).

    Returns:
        Per-item float64 scores.
    """
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    scores = counts / (top + 1.0)
    if tie_breaker is not None:
        scores = scores + 1e-9 * tie_breaker / max(float(tie_breaker.max()), 1.0)
    return scores


REPEAT_RATE_THRESHOLD = 0.05  # above this share of repeat interactions, recommending repeats pays


def repeat_rate(interactions: pl.DataFrame) -> float:
    """Share of interactions on an item the same user interacted with before (on an earlier day or earlier that day).

    Args:
        interactions: canonical interactions sorted by time.

    Returns:
        The share in [0, 1] (0 for an empty log).
    """
    if interactions.is_empty():
        return 0.0
    frame = interactions.select("user_id", "item_id", "timestamp").sort("timestamp", maintain_order=True)
    # The first interaction of each (user, item) pair is new; every later one is a repeat.
    repeats = frame.select(pl.int_range(pl.len()).over(["user_id", "item_id"]).gt(0).sum()).item()
    return float(repeats) / frame.height


def recommended_repeat_policy(rate: float) -> str:
    """``"allow"`` where people come back to items they had (grocery, fashion), ``"exclude"`` where they do not (films).

    Args:
        rate: the log's repeat rate (see :func:`repeat_rate`).

    Returns:
        ``"allow"`` if ``rate`` is at least ``REPEAT_RATE_THRESHOLD``, else ``"exclude"``.
    """
    return "allow" if rate >= REPEAT_RATE_THRESHOLD else "exclude"


# Users are ranked a block of about this many log rows at a time: a group-by, sort and per-user rank
# over a 100x label window (18.6M rows) at once held ~2 GB beside everything else a fold keeps.
RANK_BLOCK_ROWS = 2_000_000


def user_blocks(counts: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive user-row ranges ``[first, end)`` holding about ``max_rows`` log rows each.

    Args:
        counts: log rows per user row.
        max_rows: the rows a block should hold (a single heavier user gets a block of its own).

    Returns:
        Ranges covering every user row in order; one range for an empty log.
    """
    total = int(counts.sum())
    n_blocks = max(1, -(-total // max_rows))
    ends = np.searchsorted(np.cumsum(counts), np.arange(1, n_blocks) * (total / n_blocks), side="left") + 1
    edges = np.unique(np.concatenate([[0], ends, [len(counts)]]).clip(0, len(counts)))
    if len(edges) < 2:  # no users at all: one empty range keeps the result's columns
        return [(0, len(counts))]
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def ranked_user_items(
    encoded: pl.DataFrame,
    n_users: int,
    aggregations: list[pl.Expr],
    order: list[str],
    descending: list[bool],
    outputs: list[pl.Expr],
    max_rank: int | None = None,
) -> pl.DataFrame:
    """Per (user, item) pair, ``outputs`` computed from its rank among the user's items, a block of users at a time.

    Args:
        encoded: interactions with ``user_idx`` and ``item_idx`` (:attr:`TrainingData.encoded`); a
            ``_pos`` column (the row's position in the log) is available to ``aggregations``.
        n_users: user rows (``user_idx`` < ``n_users``).
        aggregations: per-pair values, aliased (e.g. the last timestamp).
        order: the columns that rank a user's pairs, best first (``user_idx`` is prepended).
        descending: one flag per ``order`` column.
        outputs: what each block keeps, over ``rank`` (uint32, 0 = best) and the aggregations;
            per-user expressions (``.over("user_idx")``) see every pair of the user. Only these
            columns outlive a block: the 100x history's ~19M pairs are 12 bytes each, not 28.
        max_rank: keep only ranks below it.

    Returns:
        ``user_idx`` and ``item_idx`` (int32) and the outputs, sorted by user then rank; the same
        rows as one pass over the whole log.
    """
    log = encoded.select("user_idx", "item_idx", "timestamp").with_row_index("_pos")
    counts = np.bincount(log["user_idx"].to_numpy(), minlength=n_users)
    blocks = []
    for first, end in user_blocks(counts, RANK_BLOCK_ROWS):
        ranked = (
            log.lazy()
            .filter(pl.col("user_idx").is_between(first, end, closed="left"))
            .group_by("user_idx", "item_idx")
            .agg(aggregations)
            .sort(["user_idx", *order], descending=[False, *descending])
            .with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).over("user_idx").alias("rank"))
        )
        if max_rank is not None:
            ranked = ranked.filter(pl.col("rank") < max_rank)
        blocks.append(ranked.select(pl.col("user_idx").cast(pl.Int32), pl.col("item_idx").cast(pl.Int32), *outputs).collect())
    return pl.concat(blocks, rechunk=False)


def user_item_csr(ranked: pl.DataFrame, values: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """A users x items float32 matrix from :func:`ranked_user_items`' rows (already in user order).

    Args:
        ranked: the pairs, sorted by ``user_idx``.
        values: one value per pair.
        n_users: rows of the matrix.
        n_items: columns of the matrix.

    Returns:
        The matrix with sorted indices (no COO copy of every pair on the way).
    """
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(ranked["user_idx"].to_numpy(), minlength=n_users), out=indptr[1:])
    matrix = sp.csr_matrix((values.astype(np.float32), ranked["item_idx"].to_numpy(writable=True), indptr), shape=(n_users, n_items))
    matrix.sort_indices()
    return matrix
