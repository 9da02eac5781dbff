"""Protects the time split: no interaction at or after the cutoff leaks into training windows."""

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import ProjectConfig, SplitConfig
from recsys.data import ground_truth, load_dataset, split_by_time


def test_global_split_has_no_leakage(shop: tuple[Path, ProjectConfig]) -> None:
    _, config = shop
    ds = load_dataset(config.data)
    s = split_by_time(ds.interactions, config.split)
    assert s.test_start is not None and s.validation_start is not None
    assert s.train["timestamp"].max() < s.validation_start <= s.validation["timestamp"].min()
    assert s.validation["timestamp"].max() < s.test_start <= s.test["timestamp"].min()
    assert s.train.height + s.validation.height + s.test.height == ds.interactions.height
    assert s.history["timestamp"].max() < s.test_start


def test_explicit_test_start() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["x", "y", "x", "z"],
            "timestamp": [dt.datetime(2020, 1, d) for d in (1, 2, 3, 4)],
            "weight": [1.0] * 4,
        }
    )
    s = split_by_time(frame, SplitConfig(test_start=dt.date(2020, 1, 3), test="1d", validation="1d"))
    assert s.train["item_id"].to_list() == ["x"]
    assert s.validation["item_id"].to_list() == ["y"]
    assert s.test["item_id"].to_list() == ["x"]  # 2020-01-04 is after the 1-day test window


def test_per_user_split_takes_each_users_last_days() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "item_id": ["1", "2", "3", "4", "5"],
            "timestamp": [dt.datetime(2020, 1, d) for d in (1, 5, 9, 2, 3)],
            "weight": [1.0] * 5,
        }
    )
    s = split_by_time(frame, SplitConfig(mode="per_user", test="1d", validation="4d"))
    assert sorted(s.test["item_id"].to_list()) == ["3", "5"]
    assert sorted(s.validation["item_id"].to_list()) == ["2", "4"]
    assert s.train["item_id"].to_list() == ["1"]


def test_ground_truth_is_distinct_items() -> None:
    test = pl.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "x", "y", "z"]})
    assert ground_truth(test) == {"a": ["x", "y"], "b": ["z"]}
    assert ground_truth(test, ["b"]) == {"b": ["z"]}


def test_repeat_rate_counts_later_interactions_on_an_item_the_user_had() -> None:
    from recsys.data.stats import recommended_repeat_policy, repeat_rate

    day = lambda d: dt.datetime(2024, 1, d)  # noqa: E731
    frame = pl.DataFrame(
        {"user_id": ["a", "a", "a", "b", "b"], "item_id": ["x", "x", "y", "x", "z"], "timestamp": [day(1), day(2), day(3), day(1), day(2)]}
    )
    assert repeat_rate(frame) == pytest.approx(1 / 5)  # only a's second x
    assert recommended_repeat_policy(0.2) == "allow" and recommended_repeat_policy(0.0) == "exclude"
    assert repeat_rate(frame.head(0)) == 0.0


def test_hourly_windows() -> None:
    hour = lambda h: dt.datetime(2024, 1, 2, h)  # noqa: E731
    frame = pl.DataFrame({"user_id": ["a"] * 6, "item_id": list("uvwxyz"), "timestamp": [hour(h) for h in (1, 5, 9, 13, 17, 21)], "weight": [1.0] * 6})
    s = split_by_time(frame, SplitConfig(test="6h", validation="8h"))
    assert s.test_start == hour(16) and s.validation_start == hour(8)
    assert s.test["item_id"].to_list() == ["y", "z"] and s.validation["item_id"].to_list() == ["w", "x"]


def test_the_history_window_is_built_once() -> None:
    """Every label fold reads the history; it is one frame, not a new concatenated and sorted copy per read."""
    import datetime as dt

    import polars as pl

    from recsys.config import SplitConfig
    from recsys.data.split import split_by_time

    days = [dt.datetime(2024, 1, d) for d in (1, 2, 3, 4, 5, 5)]
    frame = pl.DataFrame({"user_id": list("abcdef"), "item_id": list("xyzxyz"), "timestamp": days, "weight": [1.0] * 6})
    split = split_by_time(frame, SplitConfig(mode="global", test_start=dt.datetime(2024, 1, 5), test="1d", validation="1d"))
    assert split.history is split.history
    assert split.history["user_id"].to_list() == ["a", "b", "c", "d"], "train then validation, in time order"


def _log(days: list[int], hours: list[int] | None = None) -> pl.DataFrame:
    stamps = [dt.datetime(2024, 1, d, (hours or [0] * len(days))[i]) for i, d in enumerate(days)]
    return pl.DataFrame({"user_id": [f"u{i}" for i in range(len(days))], "item_id": [f"i{d}" for d in days], "timestamp": stamps, "weight": [float(i) for i in range(len(days))]})


@pytest.mark.parametrize("days", [[1, 2, 2, 3, 3, 3, 5, 6], [3, 1, 2, 6, 3, 5, 2, 3]], ids=["time-sorted", "unsorted"])
@pytest.mark.parametrize(
    "bounds", [(None, None), (None, 3), (2, 3), (3, 5), (3, None), (4, 5), (7, None), (None, 1)], ids=lambda b: f"{b[0]}-{b[1]}"
)
def test_time_window_holds_the_rows_a_filter_would_in_the_same_order(days: list[int], bounds: tuple[int | None, int | None]) -> None:
    """A slice of a sorted log (ties at both bounds, open bounds, empty windows) or a filter of an unsorted one: the same rows."""
    from recsys.data.split import time_window

    frame = _log(days)
    start, end = (None if b is None else dt.datetime(2024, 1, b) for b in bounds)
    keep = pl.lit(True)
    if start is not None:
        keep = keep & (pl.col("timestamp") >= start)
    if end is not None:
        keep = keep & (pl.col("timestamp") < end)
    assert time_window(frame, start, end).equals(frame.filter(keep))


def test_global_windows_of_a_time_sorted_log_share_its_buffers() -> None:
    """The windows and the history are views of the loaded log, not copies (2 GB of copies at the 100x rung)."""
    frame = _log([1, 1, 2, 3, 3, 4, 5, 5, 6])
    s = split_by_time(frame, SplitConfig(test="1d", validation="2d"))
    log_weights = frame["weight"].to_numpy()
    # The history is the train and validation windows' chunks joined: each part a view of the log.
    history_parts = (s.history.slice(0, s.train.height), s.history.slice(s.train.height))
    for name, window in (("train", s.train), ("validation", s.validation), ("test", s.test), ("history", history_parts[0]), ("history", history_parts[1])):
        assert np.shares_memory(window["weight"].to_numpy(), log_weights), f"{name} is a copy"
    assert s.history.equals(pl.concat([s.train, s.validation]).sort("timestamp", maintain_order=True))
    assert s.test["timestamp"].min() == dt.datetime(2024, 1, 6) and s.validation["item_id"].to_list() == ["i4", "i5", "i5"]


def test_an_unsorted_log_is_split_by_filtering_with_its_order_kept() -> None:
    frame = _log([3, 1, 6, 2, 5, 4])
    s = split_by_time(frame, SplitConfig(test="1d", validation="2d"))
    assert s.train["item_id"].to_list() == ["i3", "i1", "i2"]
    assert s.history["item_id"].to_list() == ["i1", "i2", "i3", "i4", "i5"], "the history is sorted by time"
    assert s.test["item_id"].to_list() == ["i6"]
