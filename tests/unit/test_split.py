"""Protects the time split: no interaction at or after the cutoff leaks into training windows."""

import datetime as dt
from pathlib import Path

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
