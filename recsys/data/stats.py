"""Simple statistics of a training window, shared by baselines, features and serving."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from recsys.data.interactions import IdIndex


def item_counts(
    interactions: pl.DataFrame, item_index: IdIndex, as_of: dt.datetime | None = None, days: int | None = None
) -> np.ndarray:
    """Interaction counts per item row, optionally only in the ``days`` before ``as_of``.

    Args:
        interactions: canonical interactions.
        item_index: the item universe (rows of the result).
        as_of: end of the window (exclusive); required when ``days`` is given.
        days: window length in days; None counts everything.

    Returns:
        float64 array of length ``len(item_index)``.
    """
    frame = interactions
    if days is not None:
        if as_of is None:
            raise ValueError("item_counts needs as_of when days is given")
        frame = frame.filter(pl.col("timestamp") >= as_of - dt.timedelta(days=days), pl.col("timestamp") < as_of)
    grouped = frame.group_by("item_id").agg(pl.col("weight").sum().alias("n"))
    rows = item_index.lookup(grouped["item_id"].to_list())
    counts = np.zeros(len(item_index), dtype=np.float64)
    ok = rows >= 0
    np.add.at(counts, rows[ok], grouped["n"].to_numpy()[ok])
    return counts


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
