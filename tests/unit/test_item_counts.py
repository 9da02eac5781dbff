"""Protects item_counts (every model's popularity fallback, the ranker's pop_1d/3d/7d): a group-by's sums, per item row."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recsys.data import TrainingData
from recsys.data.stats import item_counts


def _window() -> TrainingData:
    """300 rows over 6 days of 30 of a 40-item catalogue, weights like ratings (1-5)."""
    rng = np.random.default_rng(3)
    n = 300
    log = pl.DataFrame(
        {
            "user_id": [f"u{int(u)}" for u in rng.integers(0, 50, n)],
            "item_id": [f"i{int(i):02d}" for i in rng.integers(0, 30, n)],
            "timestamp": [dt.datetime(2024, 3, 1) + dt.timedelta(hours=int(h)) for h in np.sort(rng.integers(0, 6 * 24, n))],
            "weight": rng.integers(1, 6, n).astype(np.float32),
        }
    )
    return TrainingData.build(log, pl.DataFrame({"item_id": [f"i{j:02d}" for j in range(40)]}))


@pytest.mark.parametrize("days", [None, 1, 3])
def test_counts_are_the_weight_sums_of_a_group_by_on_item_ids(days: int | None) -> None:
    data = _window()
    frame = data.interactions
    if days is not None:
        frame = frame.filter(pl.col("timestamp") >= data.as_of - dt.timedelta(days=days))
    sums = dict(frame.group_by("item_id").agg(pl.col("weight").cast(pl.Float64).sum()).iter_rows())
    expected = np.array([sums.get(i, 0.0) for i in data.item_index.ids])
    counts = item_counts(data, days)
    assert counts.dtype == np.float64 and counts.shape == (data.n_items,)
    np.testing.assert_array_equal(counts, expected)
    assert counts[data.item_index.lookup(["i35"])[0]] == 0.0, "a catalogue item never bought counts zero"
    if days is not None:
        assert counts.sum() < item_counts(data).sum()
