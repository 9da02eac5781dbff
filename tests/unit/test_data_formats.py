"""Any shop's log is readable with a short config: CSV with any separator, quoting, encoding and
header, JSON lines, several kinds of event with weights and targets, and errors that say which
option to set. Every test writes real files to a temporary directory."""

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from recsys.config import InteractionSource, ItemSource, ProjectConfig, ValidationPolicy
from recsys.data import DataValidationError, ValidationReport, ground_truth, load_dataset
from recsys.data.loading import load_interactions, load_items, read_table

EVENTS = {"view": 1.0, "cart": 3.0, "purchase": 10.0}


def _load(path: Path, policy: str = "fail", **source: Any) -> tuple[pl.DataFrame, ValidationReport]:
    report = ValidationReport()
    frame = load_interactions(path, InteractionSource(path=path.name, **source), ValidationPolicy(on_error=policy), report)  # type: ignore[arg-type]
    return frame, report


def test_tab_separated_inter_file_with_typed_header(tmp_path: Path) -> None:
    # The layout of MovieLens-100k as shipped in the recbole wheel: tab-separated, "name:type" headers, '.inter' suffix.
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t5\t891717742\n22\t377\t4\t878887116\n"
    )
    (tmp_path / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\n242\tKolya\n302\tL.A. Confidential\n377\tHeavyweights\n")
    config = ProjectConfig.model_validate(
        {
            "name": "ml-100k",
            "work_dir": str(tmp_path / "w"),
            "data": {
                "data_dir": str(tmp_path),
                "interactions": {
                    "path": "ml-100k.inter",
                    "format": "csv",
                    "separator": "\t",
                    "columns": {"user_id": "user_id:token", "item_id": "item_id:token", "timestamp": "timestamp:float", "rating": "rating:float"},
                    "timestamp_unit": "s",
                    "rating_threshold": 4,
                },
                "items": {"path": "ml-100k.item", "format": "csv", "separator": "\\t", "columns": {"item_id": "item_id:token", "name": "movie_title:token_seq"}},
            },
        }
    )
    ds = load_dataset(config.data)
    assert ds.interactions["user_id"].to_list() == ["22", "186"]  # sorted by time; the rating-3 row is below threshold
    assert ds.interactions["timestamp"][0] == dt.datetime(1997, 11, 7, 7, 18, 36)
    assert ds.items["item_id"].to_list() == ["242", "302", "377"]


def test_unknown_suffix_read_as_parquet_says_to_set_the_format(tmp_path: Path) -> None:
    (tmp_path / "log.inter").write_text("user\titem\tdate\nu1\ti1\t2024-01-01\n")
    with pytest.raises(DataValidationError, match=r"cannot read log\.inter as parquet.*set data\.interactions\.format to 'csv'"):
        _load(tmp_path / "log.inter", columns={"user_id": "user", "item_id": "item", "timestamp": "date"})


def test_semicolon_with_quoted_fields_containing_the_separator(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text('user;item;date;note\n"007";"a;b";2024-01-02;"x;y"\n0042;c;2024-01-01;plain\n')
    frame, _ = _load(tmp_path / "log.csv", separator=";", columns={"user_id": "user", "item_id": "item", "timestamp": "date"})
    assert frame["user_id"].to_list() == ["0042", "007"]
    assert frame["item_id"].to_list() == ["c", "a;b"]
    # quoting off: the quotes stay part of the value
    (tmp_path / "raw.csv").write_text('user;item;date\n"7";i;2024-01-01\n')
    frame, _ = _load(tmp_path / "raw.csv", separator=";", quote_char=None, columns={"user_id": "user", "item_id": "item", "timestamp": "date"})
    assert frame["user_id"].to_list() == ['"7"']


def test_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_bytes("\ufeffuser;item;date\nü1;i1;2024-01-01\n".encode())
    frame, _ = _load(tmp_path / "log.csv", separator=";", columns={"user_id": "user", "item_id": "item", "timestamp": "date"})
    assert frame["user_id"].to_list() == ["ü1"]
    (tmp_path / "log.jsonl").write_bytes('\ufeff{"user": "u1", "item": "i1", "date": "2024-01-01"}\n'.encode())
    assert read_table(tmp_path / "log.jsonl").columns == ["user", "item", "date"]


def test_invalid_utf8_fails_naming_the_encoding_option_and_reads_lossy(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_bytes(b"user,item,date\nu\xff1,i1,2024-01-01\n")
    cols = {"user_id": "user", "item_id": "item", "timestamp": "date"}
    with pytest.raises(DataValidationError, match=r"cannot read log\.csv as csv.*set data\.interactions\.encoding: utf8-lossy"):
        _load(tmp_path / "log.csv", columns=cols)
    frame, _ = _load(tmp_path / "log.csv", encoding="utf8-lossy", columns=cols)
    assert frame["user_id"].to_list() == ["u\ufffd1"]


def test_no_header_with_column_names_comments_and_epoch_milliseconds(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("# exported 2024-05-01\n00123|0009|1700000000000\n00124|0010|1700000001500\n")
    frame, _ = _load(
        tmp_path / "log.txt",
        separator="|",
        has_header=False,
        column_names=["customer", "sku", "ms"],
        comment_prefix="#",
        columns={"user_id": "customer", "item_id": "sku", "timestamp": "ms"},
        timestamp_unit="ms",
    )
    assert frame["user_id"].to_list() == ["00123", "00124"] and frame["item_id"].to_list() == ["0009", "0010"]
    assert frame["timestamp"].to_list() == [dt.datetime(2023, 11, 14, 22, 13, 20), dt.datetime(2023, 11, 14, 22, 13, 21, 500000)]


def test_json_lines_keep_leading_zeros_and_stringify_numeric_ids(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text(
        '{"user": "00123", "item": 42, "ts": "2024-01-02T10:00:00"}\n'
        '{"user": "00124", "item": 7, "ts": "2024-01-01"}\n'
    )
    frame, _ = _load(tmp_path / "log.jsonl", columns={"user_id": "user", "item_id": "item", "timestamp": "ts"})
    assert frame["user_id"].to_list() == ["00124", "00123"]
    assert frame["item_id"].to_list() == ["7", "42"]
    assert frame.schema["item_id"] == pl.String
    (tmp_path / "items.ndjson").write_text('{"sku": "0042", "name": "a"}\n{"sku": "0007", "name": "b"}\n')
    items = load_items(tmp_path / "items.ndjson", ItemSource(path="items.ndjson", columns={"item_id": "sku"}), ValidationPolicy(), ValidationReport())
    assert items["item_id"].to_list() == ["0042", "0007"]


def test_integer_ids_in_parquet_become_decimal_strings(tmp_path: Path) -> None:
    pl.DataFrame({"u": [1, 20], "i": [300, 4], "d": [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]}).write_parquet(tmp_path / "log.parquet")
    frame, _ = _load(tmp_path / "log.parquet", columns={"user_id": "u", "item_id": "i", "timestamp": "d"})
    assert frame["user_id"].to_list() == ["1", "20"] and frame["item_id"].to_list() == ["300", "4"]


def test_wrong_separator_names_file_separator_and_option(tmp_path: Path) -> None:
    cols = {"user_id": "user", "item_id": "item", "timestamp": "date", "price": "price"}
    (tmp_path / "interactions.csv").write_text("user;item;date;price\nu1;i1;2024-01-01;3,50\n")
    with pytest.raises(DataValidationError) as err:
        _load(tmp_path / "interactions.csv", columns=cols)
    msg = str(err.value)
    assert "cannot read interactions.csv as csv with separator ','" in msg and "more fields" in msg
    assert "set data.interactions.separator" in msg
    # no field count mismatch, but the whole header reads as one column: still named as a separator problem
    (tmp_path / "interactions.tsv").write_text("user;item;date;price\nu1;i1;2024-01-01;3.5\n")
    with pytest.raises(DataValidationError, match=r"interactions\.tsv as csv with separator '\\t'.*set data\.interactions\.separator: ';'"):
        _load(tmp_path / "interactions.tsv", columns=cols)


def test_column_names_count_mismatch_is_named(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("u1,i1,2024-01-01,extra\n")
    with pytest.raises(DataValidationError, match=r"log\.csv as csv.*set data\.interactions\.column_names"):
        _load(tmp_path / "log.csv", has_header=False, column_names=["user", "item", "date"], columns={"user_id": "user", "item_id": "item", "timestamp": "date"})


def _event_log(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "events.csv"
    path.write_text(
        "visitor,product,when,kind,qty\n"
        "v1,p1,2024-01-01 10:00:00,view,1\n"
        "v1,p1,2024-01-01 10:01:00,cart,2\n"
        "v1,p1,2024-01-01 10:02:00,purchase,2\n"
        "v2,p2,2024-01-01 11:00:00,view,1\n" + extra
    )
    return path


EVENT_SOURCE: dict[str, Any] = {
    "columns": {"user_id": "visitor", "item_id": "product", "timestamp": "when", "event": "kind", "weight": "qty"},
    "event_weights": EVENTS,
}


def test_event_weights_multiply_the_weight_column_and_mark_targets(tmp_path: Path) -> None:
    frame, report = _load(_event_log(tmp_path), **EVENT_SOURCE, target_events=["purchase"])
    assert frame.columns == ["user_id", "item_id", "timestamp", "weight", "event", "is_target"]
    assert frame["event"].to_list() == ["view", "cart", "purchase", "view"]
    assert frame["weight"].to_list() == [1.0, 6.0, 20.0, 1.0]
    assert frame["is_target"].to_list() == [False, False, True, False]
    assert frame.schema["is_target"] == pl.Boolean and frame.schema["event"] == pl.String
    assert report.counts["interactions_target"] == 1
    # no target_events: every event is a target; no weight column: the event weight alone
    source = {**EVENT_SOURCE, "columns": {k: v for k, v in EVENT_SOURCE["columns"].items() if k != "weight"}}
    frame, _ = _load(_event_log(tmp_path), **source)
    assert frame["weight"].to_list() == [1.0, 3.0, 10.0, 1.0] and frame["is_target"].all()


def test_unknown_event_type_fails_naming_it_or_is_dropped_and_reported(tmp_path: Path) -> None:
    path = _event_log(tmp_path, "v2,p2,2024-01-01 12:00:00,wishlist,1\nv3,p1,2024-01-01 12:30:00,wishlist,1\n")
    with pytest.raises(DataValidationError) as err:
        _load(path, **EVENT_SOURCE)
    msg = str(err.value)
    assert "column 'kind'" in msg and "'wishlist' (2 rows)" in msg and "'cart', 'purchase', 'view'" in msg
    frame, report = _load(path, "drop", **EVENT_SOURCE)
    assert frame.height == 4 and "wishlist" not in frame["event"].to_list()
    dropped = [i for i in report.issues if "wishlist" in i.problem]
    assert dropped and dropped[0].count == 2 and dropped[0].action == "dropped 2 rows"


def test_ground_truth_counts_only_target_events() -> None:
    window = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "item_id": ["x", "y", "z", "x"],
            "event": ["view", "purchase", "purchase", "view"],
            "is_target": [False, True, True, False],
        }
    )
    assert ground_truth(window) == {"a": ["y", "z"]}
    assert ground_truth(window, ["b"]) == {}
    assert ground_truth(window.drop("event", "is_target")) == {"a": ["x", "y", "z"], "b": ["x"]}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"event_weights": {"view": 1, "buy": 0}, "columns": {"event": "kind"}}, "event_weights must be positive"),
        ({"event_weights": {"view": 1}, "target_events": ["buy"], "columns": {"event": "kind"}}, "unknown: ['buy']"),
        ({"columns": {"event": "kind"}}, "give every event type a weight in event_weights"),
        ({"event_weights": {"view": 1}}, "set columns.event"),
        ({"has_header": False}, "list the file's columns in column_names"),
        ({"separator": ";;"}, "separator must be one single-byte character"),
    ],
)
def test_config_rejects_inconsistent_reading_and_event_options(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        InteractionSource(path="log.csv", **source)
