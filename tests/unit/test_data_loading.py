"""Protects the data layer's promise: bad input gives a clear error naming file, column and counts,
and under the drop policy nothing disappears without being reported."""

from pathlib import Path

import polars as pl
import pytest

from recsys.config import ProjectConfig
from recsys.data import DataValidationError, load_dataset
from tests.conftest import shop_config


def test_clean_shop_loads_with_canonical_schema(shop: tuple[Path, ProjectConfig]) -> None:
    _, config = shop
    ds = load_dataset(config.data)
    assert ds.interactions.columns == ["user_id", "item_id", "timestamp", "weight", "price"]
    assert ds.interactions.schema["timestamp"] == pl.Datetime("us")
    assert ds.items.columns[0] == "item_id" and "has_image" in ds.items.columns
    # every third item has no photo: normal, reported as info, not an error
    assert ds.items["has_image"].sum() == 20
    assert not ds.report.errors
    assert any(i.severity == "info" and "without an image" in i.problem for i in ds.report.issues)
    assert ds.users is not None and ds.users.columns == ["user_id", "age"]


def test_missing_column_names_file_and_column(shop: tuple[Path, ProjectConfig]) -> None:
    root, config = shop
    pl.read_parquet(root / "interactions.parquet").drop("date").write_parquet(root / "interactions.parquet")
    with pytest.raises(DataValidationError) as err:
        load_dataset(config.data)
    msg = str(err.value)
    assert "interactions.parquet" in msg and "timestamp='date'" in msg and "missing column" in msg


def test_duplicate_catalogue_ids_fail_with_count_and_examples(shop: tuple[Path, ProjectConfig]) -> None:
    root, config = shop
    items = pl.read_parquet(root / "items.parquet")
    pl.concat([items, items.head(2)]).write_parquet(root / "items.parquet")
    with pytest.raises(DataValidationError) as err:
        load_dataset(config.data)
    msg = str(err.value)
    assert "items.parquet" in msg and "duplicate item ids" in msg and "(4 rows)" in msg and "'i000'" in msg


def test_duplicate_ids_under_drop_policy_are_reported(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = shop
    items = pl.read_parquet(root / "items.parquet")
    pl.concat([items, items.head(2)]).write_parquet(root / "items.parquet")
    config = shop_config(root, tmp_path / "w", data={"validation": {"on_error": "drop"}})
    ds = load_dataset(config.data)
    assert ds.items.height == items.height
    dropped = [i for i in ds.report.issues if "duplicate" in i.problem]
    assert dropped and dropped[0].count == 2 and dropped[0].action == "dropped 2 rows"


def test_null_and_unparseable_timestamps(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = shop
    frame = pl.read_parquet(root / "interactions.parquet").with_columns(pl.col("date").cast(pl.String))
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("not-a-date")).otherwise(pl.col("date")).alias("date"))
    frame.write_csv(root / "interactions.csv")
    config = shop_config(root, tmp_path / "w", data={"interactions": {"path": "interactions.csv"}})
    with pytest.raises(DataValidationError, match=r"column 'date': null or unparseable timestamp \(3 rows\).*'not-a-date'"):
        load_dataset(config.data)
    drop = shop_config(root, tmp_path / "w2", data={"interactions": {"path": "interactions.csv"}, "validation": {"on_error": "drop"}})
    ds = load_dataset(drop.data)
    assert ds.interactions.height == frame.height - 3
    assert ds.report.counts["interactions_read"] - ds.report.counts["interactions_loaded"] == 3


def test_unknown_items_fail_or_are_reported(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, config = shop
    frame = pl.read_parquet(root / "interactions.parquet")
    extra = frame.head(2).with_columns(pl.lit("ghost").alias("item"))
    pl.concat([frame, extra]).write_parquet(root / "interactions.parquet")
    with pytest.raises(DataValidationError, match=r"item not in the catalogue \(2 rows\).*'ghost'"):
        load_dataset(config.data)
    keep = shop_config(root, tmp_path / "w", data={"validation": {"unknown_items": "drop"}})
    ds = load_dataset(keep.data)
    assert "ghost" not in ds.interactions["item_id"].to_list()
    assert any(i.problem == "item not in the catalogue" and i.action == "dropped 2 rows" for i in ds.report.issues)


def test_corrupt_image_is_named(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = shop
    (root / "images" / "i000.jpg").write_bytes(b"this is not a jpeg")
    config = shop_config(root, tmp_path / "w", data={"validation": {"check_images": "decode"}})
    with pytest.raises(DataValidationError, match=r"image file cannot be decoded \(1 rows\).*i000\.jpg"):
        load_dataset(config.data)
    lenient = shop_config(root, tmp_path / "w2", data={"validation": {"check_images": "decode", "on_error": "drop"}})
    ds = load_dataset(lenient.data)
    # the item stays in the catalogue, as an item without an image
    assert ds.items.filter(pl.col("item_id") == "i000")["has_image"].item() is False


def test_catalogue_without_any_images(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = shop
    config = shop_config(root, tmp_path / "w", data={"items": {"image_dir": None}})
    ds = load_dataset(config.data)
    assert ds.items["has_image"].sum() == 0


def test_explicit_ratings_csv_with_threshold(tmp_path: Path) -> None:
    root = tmp_path / "ml"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,5,964982703\n1,11,2,964982704\n2,10,4,964982705\n2,12,3.5,964982706\n")
    (root / "movies.csv").write_text("movieId,title\n10,A\n11,B\n12,C\n")
    config = ProjectConfig.model_validate(
        {
            "name": "ml",
            "work_dir": str(tmp_path / "w"),
            "data": {
                "data_dir": str(root),
                "interactions": {
                    "path": "ratings.csv",
                    "columns": {"user_id": "userId", "item_id": "movieId", "timestamp": "timestamp", "rating": "rating"},
                    "timestamp_unit": "s",
                    "rating_threshold": 4.0,
                },
                "items": {"path": "movies.csv", "columns": {"item_id": "movieId", "name": "title"}},
            },
        }
    )
    ds = load_dataset(config.data)
    assert sorted(zip(ds.interactions["user_id"], ds.interactions["item_id"])) == [("1", "10"), ("2", "10")]
    assert ds.interactions["timestamp"][0].year == 2000
    below = [i for i in ds.report.issues if "threshold" in i.problem]
    assert below and below[0].count == 2


def test_missing_file_is_named(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = shop
    config = shop_config(root, tmp_path / "w", data={"items": {"path": "nope.parquet"}})
    with pytest.raises(DataValidationError, match=r"nope\.parquet.*file not found"):
        load_dataset(config.data)


def test_encoded_interactions_add_index_columns_and_share_the_rest() -> None:
    """``TrainingData.encoded`` numbers users and items by their index rows without copying the log's columns."""
    import datetime as dt

    import numpy as np
    import polars as pl

    from recsys.data import TrainingData

    items = pl.DataFrame({"item_id": ["x", "y", "z"]})
    log = pl.DataFrame(
        {"user_id": ["b", "a", "b", "c"], "item_id": ["z", "x", "w", "z"], "timestamp": [dt.datetime(2024, 1, d) for d in (1, 2, 3, 4)], "weight": [1.0, 2.0, 3.0, 4.0]}
    )
    data = TrainingData.build(log, items)
    e = data.encoded
    assert e.columns == [*log.columns, "user_idx", "item_idx"]
    assert e["user_idx"].to_list() == [0, 1, 0, 2]  # users in first-seen order
    assert e["item_idx"].to_list() == [2, 0, 3, 2]  # "w" is not in the catalogue: appended after it
    assert e.drop("user_idx", "item_idx").equals(log)
    assert np.shares_memory(e["weight"].to_numpy(), data.interactions["weight"].to_numpy())


def test_a_shared_id_index_is_one_object_per_distinct_id_list() -> None:
    import numpy as np

    from recsys.data.interactions import IdIndex

    a = IdIndex.shared(["u1", "u2", "u3"])
    assert IdIndex.shared(np.array(["u1", "u2", "u3"])) is a  # equal ids from another array
    assert IdIndex.shared(["u1", "u3", "u2"]) is not a  # same ids, other rows
    assert IdIndex.shared(["u1", "u2"]) is not a
    assert a.lookup(["u3", "x"]).tolist() == [2, -1]
    with pytest.raises(ValueError, match="unique"):
        IdIndex.shared(["u1", "u1"])
