"""Read interaction logs, catalogues and customer tables into canonical polars frames.

Canonical interaction columns: ``user_id`` (str), ``item_id`` (str), ``timestamp``
(Datetime[us]), ``weight`` (Float32), and optionally ``price`` (Float32) and ``channel`` (str).
Canonical catalogue: ``item_id`` (str) first, then the catalogue's own columns unchanged.

Nothing is dropped silently: every removed row is counted in the :class:`ValidationReport`,
and under the ``fail`` policy any bad row raises :class:`DataValidationError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.config import InteractionSource, ItemSource, UserSource, ValidationPolicy
from recsys.data.report import DataValidationError, ValidationIssue, ValidationReport

Format = Literal["auto", "parquet", "csv"]


def read_table(path: Path, fmt: Format = "auto") -> pl.DataFrame:
    """Read a parquet or CSV file; ids and free text stay strings (no type guessing on CSV ids).

    Args:
        path: the file.
        fmt: ``"parquet"``, ``"csv"``, or ``"auto"`` (CSV for .csv/.tsv/.txt, else parquet).

    Raises:
        DataValidationError: the file is missing or cannot be parsed.
    """
    if not path.is_file():
        raise DataValidationError([ValidationIssue(str(path), "", "file not found", 0)])
    kind = fmt if fmt != "auto" else ("csv" if path.suffix.lower() in {".csv", ".tsv", ".txt"} else "parquet")
    try:
        if kind == "csv":
            return pl.read_csv(path, infer_schema=False, separator="\t" if path.suffix == ".tsv" else ",")
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several exception types for unreadable files
        raise DataValidationError([ValidationIssue(str(path), "", f"cannot read as {kind}: {exc}", 0)]) from exc


def require_columns(frame: pl.DataFrame, columns: Mapping[str, str | None], file: str) -> None:
    """Fail with one message listing every configured column the file lacks.

    Args:
        frame: the file's contents.
        columns: role -> configured column name (None: not configured, not required).
        file: the file name for the message.

    Raises:
        DataValidationError: one or more columns are missing.
    """
    missing = [f"{role}={name!r}" for role, name in columns.items() if name is not None and name not in frame.columns]
    if missing:
        raise DataValidationError(
            [
                ValidationIssue(
                    file,
                    ", ".join(missing),
                    f"missing column(s); the file has {frame.columns}",
                    frame.height,
                )
            ]
        )


class _Validator:
    """Applies the fail / drop policy to one file's frame, recording every finding."""

    def __init__(self, file: str, policy: ValidationPolicy, report: ValidationReport):
        self.file, self.policy, self.report = file, policy, report
        self.errors: list[ValidationIssue] = []

    def check(
        self,
        frame: pl.DataFrame,
        bad: pl.Expr,
        column: str,
        problem: str,
        mode: Literal["fail", "drop", "keep"] | None = None,
        example: pl.Expr | None = None,
    ) -> pl.DataFrame:
        """Flag rows matching ``bad``; drop them, keep them, or schedule a failure.

        Args:
            frame: the rows to check.
            bad: true (or null) for an offending row.
            column: the column named in the finding.
            problem: the finding's description.
            mode: override of the policy's ``on_error``.
            example: what to show per offending row (default: ``column``).

        Returns:
            ``frame``, without the offending rows under ``drop``.
        """
        mask = frame.select(bad.fill_null(True).alias("bad"))["bad"]
        count = int(mask.sum())
        if count == 0:
            return frame
        mode = mode or self.policy.on_error
        shown = frame.filter(mask).head(self.policy.max_examples)
        examples = shown.select(example if example is not None else pl.col(column)).to_series().to_list()
        if mode == "fail":
            issue = ValidationIssue(self.file, column, problem, count, examples, "error", "failed")
            self.errors.append(issue)
            return frame
        action = f"dropped {count:,} rows" if mode == "drop" else "kept"
        self.report.add(ValidationIssue(self.file, column, problem, count, examples, "warning", action))
        return frame.filter(~mask) if mode == "drop" else frame

    def finish(self) -> None:
        """Raise the scheduled failures, if any (after recording them in the report)."""
        if self.errors:
            self.report.issues.extend(self.errors)
            raise DataValidationError(self.errors)


def _to_datetime(col: pl.Expr, dtype: pl.DataType, source: InteractionSource) -> pl.Expr:
    if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    if dtype.is_integer() or source.timestamp_unit is not None:
        unit = source.timestamp_unit or "s"
        return pl.from_epoch(col.cast(pl.Int64, strict=False), time_unit=unit).cast(pl.Datetime("us"))
    text = col.cast(pl.String).str.strip_chars()
    if source.timestamp_format:
        return text.str.to_datetime(source.timestamp_format, strict=False).cast(pl.Datetime("us"))
    # ISO date or date-time; a plain date parses to midnight.
    return pl.coalesce(
        text.str.to_datetime(strict=False, time_unit="us"),
        text.str.to_date(strict=False).cast(pl.Datetime("us")),
    )


def _id_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    """Ids become trimmed strings; floats that are whole numbers lose their '.0' (CSV round-trips)."""
    col = pl.col(name)
    if dtype.is_float():
        col = col.cast(pl.Int64, strict=False)
    return col.cast(pl.String).str.strip_chars()


def load_interactions(
    path: Path, source: InteractionSource, policy: ValidationPolicy, report: ValidationReport
) -> pl.DataFrame:
    """Load and validate an interaction log into the canonical schema.

    Args:
        path: the resolved file path.
        source: column mapping and parsing options.
        policy: fail or drop bad rows.
        report: receives every finding and the row counts.

    Returns:
        Canonical interactions sorted by timestamp (stable, so the file's order breaks ties).

    Raises:
        DataValidationError: missing columns, or bad rows under the ``fail`` policy.
    """
    file = str(path)
    raw = read_table(path, source.format)
    cols = source.columns
    require_columns(raw, cols.model_dump(), file)
    report.counts["interactions_read"] = raw.height
    v = _Validator(file, policy, report)

    frame = raw.with_columns(
        _id_expr(cols.user_id, raw.schema[cols.user_id]).alias("user_id"),
        _id_expr(cols.item_id, raw.schema[cols.item_id]).alias("item_id"),
        _to_datetime(pl.col(cols.timestamp), raw.schema[cols.timestamp], source).alias("timestamp"),
        pl.int_range(pl.len()).alias("_row"),
    )
    frame = v.check(frame, pl.col("user_id").is_null() | (pl.col("user_id") == ""), cols.user_id, "null or empty user id", example=pl.col("_row"))
    frame = v.check(frame, pl.col("item_id").is_null() | (pl.col("item_id") == ""), cols.item_id, "null or empty item id", example=pl.col("_row"))
    frame = v.check(
        frame,
        pl.col("timestamp").is_null(),
        cols.timestamp,
        "null or unparseable timestamp",
        example=pl.col(cols.timestamp).cast(pl.String),
    )

    weight = pl.lit(1.0)
    for role in ("weight", "rating", "price"):
        name = getattr(cols, role)
        if name is None:
            continue
        as_float = pl.col(name).cast(pl.Float64, strict=False)
        frame = frame.with_columns(as_float.alias(f"_{role}"))
        frame = v.check(frame, pl.col(f"_{role}").is_null() | ~pl.col(f"_{role}").is_finite(), name, f"non-numeric or missing {role}", example=pl.col(name).cast(pl.String))
    if cols.weight is not None:
        frame = v.check(frame, pl.col("_weight") <= 0, cols.weight, "weight must be positive")
        weight = pl.col("_weight")
    if cols.rating is not None and source.rating_threshold is not None:
        below = frame.filter(pl.col("_rating") < source.rating_threshold).height
        # Turning ratings into positives is a configured transformation, reported, not an error.
        report.add(
            ValidationIssue(
                file, cols.rating, f"ratings below threshold {source.rating_threshold} are not positives", below, [], "info", f"dropped {below:,} rows"
            )
        )
        frame = frame.filter(pl.col("_rating") >= source.rating_threshold)
    v.finish()

    out = [pl.col("user_id"), pl.col("item_id"), pl.col("timestamp"), weight.cast(pl.Float32).alias("weight")]
    if cols.price is not None:
        out.append(pl.col("_price").cast(pl.Float32).alias("price"))
    if cols.channel is not None:
        out.append(pl.col(cols.channel).cast(pl.String).alias("channel"))
    result = frame.select(out).sort("timestamp", maintain_order=True)
    report.counts["interactions_loaded"] = result.height
    return result


def load_items(path: Path, source: ItemSource, policy: ValidationPolicy, report: ValidationReport) -> pl.DataFrame:
    """Load and validate the catalogue; ``item_id`` comes first, other columns are kept as they are.

    Args:
        path: the catalogue file.
        source: its format and column names.
        policy: what to do with null or duplicate ids.
        report: receives the findings and row counts.

    Raises:
        DataValidationError: missing columns, null ids or duplicate ids under the ``fail`` policy.
    """
    file = str(path)
    raw = read_table(path, source.format)
    cols = source.columns
    wanted = {"item_id": cols.item_id, "name": cols.name}
    wanted |= {f"categorical[{i}]": c for i, c in enumerate(cols.categorical)}
    wanted |= {f"text[{i}]": c for i, c in enumerate(cols.text)}
    require_columns(raw, wanted, file)
    report.counts["items_read"] = raw.height
    v = _Validator(file, policy, report)
    frame = raw.with_columns(_id_expr(cols.item_id, raw.schema[cols.item_id]).alias("_item_id"))
    frame = v.check(frame, pl.col("_item_id").is_null() | (pl.col("_item_id") == ""), cols.item_id, "null or empty item id", example=pl.int_range(pl.len()))
    # Under "drop" the first occurrence of a duplicated id is kept and the rest are reported.
    dup_mask = pl.col("_item_id").is_duplicated() if policy.on_error == "fail" else ~pl.col("_item_id").is_first_distinct()
    frame = v.check(frame, dup_mask, cols.item_id, "duplicate item ids", example=pl.col("_item_id"))
    v.finish()
    rest = [c for c in raw.columns if c != cols.item_id]
    result = frame.select(pl.col("_item_id").alias("item_id"), *rest)
    report.counts["items_loaded"] = result.height
    return result


def load_users(path: Path, source: UserSource, policy: ValidationPolicy, report: ValidationReport) -> pl.DataFrame:
    """Load customer attributes keyed by ``user_id``; duplicate or null ids follow the policy.

    Args:
        path: the customers file.
        source: its format and column names.
        policy: what to do with null or duplicate ids.
        report: receives the findings.

    Raises:
        DataValidationError: missing columns, or bad ids under the ``fail`` policy.
    """
    file = str(path)
    raw = read_table(path, source.format)
    wanted = {"user_id": source.user_id} | {c: c for c in source.categorical + source.numeric}
    require_columns(raw, wanted, file)
    v = _Validator(file, policy, report)
    frame = raw.with_columns(_id_expr(source.user_id, raw.schema[source.user_id]).alias("_user_id"))
    frame = v.check(frame, pl.col("_user_id").is_null(), source.user_id, "null user id", example=pl.int_range(pl.len()))
    dup = pl.col("_user_id").is_duplicated() if policy.on_error == "fail" else ~pl.col("_user_id").is_first_distinct()
    frame = v.check(frame, dup, source.user_id, "duplicate user ids", example=pl.col("_user_id"))
    for name in source.numeric:
        frame = frame.with_columns(pl.col(name).cast(pl.Float64, strict=False))
    v.finish()
    result = frame.select(
        pl.col("_user_id").alias("user_id"),
        *[pl.col(c).cast(pl.String) for c in source.categorical],
        *[pl.col(c) for c in source.numeric],
    )
    report.counts["users_loaded"] = result.height
    return result
