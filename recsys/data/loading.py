"""Read interaction logs, catalogues and customer tables into canonical polars frames.

Canonical interaction columns: ``user_id`` (str), ``item_id`` (str), ``timestamp``
(Datetime[us]), ``weight`` (Float32), and optionally ``price`` (Float32) and ``channel`` (str).
With an event column configured, also ``event`` (str) and ``is_target`` (bool), and ``weight``
is the event type's weight times the configured weight column (times 1 without one).
Canonical catalogue: ``item_id`` (str) first, then the catalogue's own columns unchanged.

Files are parquet, CSV (any separator, quoting, header or not) or JSON lines; ids always come out
as strings ("00123" stays "00123"; integer ids become their decimal string).

Nothing is dropped silently: every removed row is counted in the :class:`ValidationReport`,
and under the ``fail`` policy any bad row raises :class:`DataValidationError`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.config import FileFormat, InteractionSource, ItemSource, UserSource, ValidationPolicy
from recsys.data.report import DataValidationError, ValidationIssue, ValidationReport

Format = Literal["auto", "parquet", "csv", "jsonl"]
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_BOM = b"\xef\xbb\xbf"
# Separators a header is checked for when a CSV file reads as one single column.
_LIKELY_SEPARATORS = ("\t", ";", "|", ",")


def file_kind(path: Path, fmt: Format) -> Literal["parquet", "csv", "jsonl"]:
    """The format a file is read as: ``fmt``, or for ``"auto"`` the one its suffix names (else parquet).

    Args:
        path: the file.
        fmt: the configured format, or ``"auto"``.

    Returns:
        ``"parquet"``, ``"csv"`` or ``"jsonl"``.
    """
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    return "csv" if suffix in _CSV_SUFFIXES else "jsonl" if suffix in _JSONL_SUFFIXES else "parquet"


def csv_separator(path: Path, options: FileFormat) -> str:
    """The configured separator, or by default a tab for ``.tsv`` files and a comma otherwise.

    Args:
        path: the CSV file.
        options: the source's read options.

    Returns:
        The separator.
    """
    if options.separator is not None:
        return options.separator
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_table(path: Path, options: FileFormat | Format = "auto", section: str = "data") -> pl.DataFrame:
    """Read a parquet, CSV or JSON-lines file; CSV cells stay strings (no type guessing on ids).

    Args:
        path: the file.
        options: how to read it (a source config), or just a format name.
        section: the config section the options live in, for the hint in error messages
            (e.g. ``"data.interactions"``).

    Returns:
        The file's rows, column names without a byte-order mark.

    Raises:
        DataValidationError: the file is missing or cannot be parsed; the message names the file,
            the format and options used, and the option to change.
    """
    opts = options if isinstance(options, FileFormat) else FileFormat(format=options)
    if not path.is_file():
        raise DataValidationError([ValidationIssue(str(path), "", "file not found", 0)])
    kind = file_kind(path, opts.format)
    if kind == "csv":
        frame = _read_csv(path, opts, section)
    elif kind == "jsonl":
        frame = _read_jsonl(path, opts, section)
    else:
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several exception types for unreadable files
            why = f" ('auto' reads '{path.suffix}' files as parquet)" if opts.format == "auto" else ""
            raise _unreadable(path, f"as parquet{why}", exc, f"set {section}.format to 'csv' or 'jsonl' if it is not parquet") from exc
    if frame.columns and frame.columns[0].startswith("\ufeff"):
        frame = frame.rename({frame.columns[0]: frame.columns[0].lstrip("\ufeff")})
    return frame


def _unreadable(path: Path, how: str, exc: Exception | str, fix: str) -> DataValidationError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataValidationError([ValidationIssue(str(path), "", f"cannot read {path.name} {how}: {reason} ({fix})", 0)])


def _read_csv(path: Path, opts: FileFormat, section: str) -> pl.DataFrame:
    sep = csv_separator(path, opts)
    how = f"as csv with separator {sep!r}"
    try:
        frame = pl.read_csv(
            path,
            infer_schema=False,
            separator=sep,
            quote_char=opts.quote_char,
            encoding=opts.encoding,
            has_header=opts.has_header,
            new_columns=opts.column_names,
            comment_prefix=opts.comment_prefix,
        )
    except Exception as exc:  # polars raises ComputeError, SchemaError, NoDataError, ...
        text = str(exc).lower()
        if "utf-8" in text or "utf8" in text:
            fix = f"set {section}.encoding: utf8-lossy to replace invalid bytes"
        elif "new_columns" in text:
            fix = f"set {section}.column_names to one name per field"
        elif "more fields" in text:
            fix = f"set {section}.separator, or {section}.quote_char if quoted fields contain the separator"
        else:
            fix = f"check {section}.format, separator, quote_char, encoding and has_header"
        raise _unreadable(path, how, exc, fix) from exc
    if frame.width == 1 and opts.has_header:
        header = frame.columns[0]
        other = next((c for c in _LIKELY_SEPARATORS if c != sep and c in header), None)
        if other is not None:
            raise _unreadable(
                path, how, f"the header reads as one single column {header!r}, which contains {other!r}", f"set {section}.separator: {other!r}"
            )
    return frame


def _read_jsonl(path: Path, opts: FileFormat, section: str) -> pl.DataFrame:
    with path.open("rb") as f:
        has_bom = f.read(len(_BOM)) == _BOM
    source: Path | io.BytesIO = path
    if has_bom or opts.encoding == "utf8-lossy":
        data = path.read_bytes()[len(_BOM) if has_bom else 0 :]
        if opts.encoding == "utf8-lossy":
            data = data.decode("utf-8", errors="replace").encode()
        source = io.BytesIO(data)
    try:
        # The whole file decides each column's type: an id column of numbers with a string further down stays whole.
        return pl.read_ndjson(source, infer_schema_length=None)
    except Exception as exc:  # polars raises ComputeError and others for malformed lines
        raise _unreadable(path, "as jsonl (one JSON object per line)", exc, f"check {section}.format and encoding") from exc


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
        if not dtype.is_integer():
            # CSV text such as "881250949" or "881250949.0" (epoch seconds written as floats).
            col = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
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
    raw = read_table(path, source, "data.interactions")
    cols = source.columns
    require_columns(raw, cols.model_dump(), file)
    report.counts["interactions_read"] = raw.height
    v = _Validator(file, policy, report)

    frame = raw.with_columns(
        _id_expr(cols.user_id, raw.schema[cols.user_id]).alias("user_id"),
        _id_expr(cols.item_id, raw.schema[cols.item_id]).alias("item_id"),
        _to_datetime(pl.col(cols.timestamp), raw.schema[cols.timestamp], source).alias("timestamp"),
        pl.col(cols.timestamp).cast(pl.String).alias("_timestamp_text"),
        pl.int_range(pl.len()).alias("_row"),
    )
    frame = v.check(frame, pl.col("user_id").is_null() | (pl.col("user_id") == ""), cols.user_id, "null or empty user id", example=pl.col("_row"))
    frame = v.check(frame, pl.col("item_id").is_null() | (pl.col("item_id") == ""), cols.item_id, "null or empty item id", example=pl.col("_row"))
    frame = v.check(
        frame,
        pl.col("timestamp").is_null(),
        cols.timestamp,
        "null or unparseable timestamp" + _epoch_hint(raw[cols.timestamp], source),
        example=pl.col("_timestamp_text"),
    )
    if cols.event is not None:
        frame = _check_events(frame, source, v)

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
    if cols.event is not None:
        weight = weight * pl.col("_event").replace_strict(source.event_weights, default=None, return_dtype=pl.Float64)
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
    if cols.event is not None:
        targets = source.target_events
        is_target = pl.lit(True) if targets is None else pl.col("_event").is_in(pl.Series(targets, dtype=pl.String).implode())
        out += [pl.col("_event").alias("event"), is_target.alias("is_target")]
    result = frame.select(out).sort("timestamp", maintain_order=True)
    report.counts["interactions_loaded"] = result.height
    if cols.event is not None:
        report.counts["interactions_target"] = int(result["is_target"].sum())
    return result


def _epoch_hint(values: pl.Series, source: InteractionSource) -> str:
    """A hint for the timestamp finding when text timestamps are all numbers and no epoch unit is set."""
    if source.timestamp_unit is not None or values.dtype != pl.String:
        return ""
    given = values.drop_nulls()
    if given.is_empty() or not given.str.contains(r"^\s*-?\d+(\.\d*)?\s*$").all():
        return ""
    return " (the values look like epoch times: set data.interactions.timestamp_unit to 's' or 'ms')"


def _check_events(frame: pl.DataFrame, source: InteractionSource, v: _Validator) -> pl.DataFrame:
    """Add ``_event``; null and unconfigured event types fail or are dropped and reported."""
    name = source.columns.event
    assert name is not None
    frame = frame.with_columns(pl.col(name).cast(pl.String).str.strip_chars().alias("_event"))
    present = pl.col("_event").is_not_null() & (pl.col("_event") != "")
    frame = v.check(frame, ~present, name, "null or empty event type", example=pl.col("_row"))
    known = sorted(source.event_weights)
    unknown = present & ~pl.col("_event").is_in(pl.Series(known, dtype=pl.String).implode())
    types = frame.filter(unknown)["_event"].value_counts(sort=True)
    if types.height:
        shown = ", ".join(f"{t!r} ({n:,} rows)" for t, n in types.head(10).iter_rows())
        more = f" and {types.height - 10} more" if types.height > 10 else ""
        problem = (
            f"event type(s) {shown}{more} not in event_weights (known: {', '.join(map(repr, known))}); "
            "add them to data.interactions.event_weights, or drop them with validation.on_error: drop"
        )
        frame = v.check(frame, unknown, name, problem, example=pl.col("_event"))
    return frame


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
    raw = read_table(path, source, "data.items")
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
    raw = read_table(path, source, "data.users")
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
