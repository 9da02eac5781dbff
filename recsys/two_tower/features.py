"""Two-tower inputs: an item feature table for the whole catalogue and user queries with history bags.

Item side: the catalogue metadata as categorical codes (one embedding table each), and dense
features (content vector, ALS item factors, price) for every catalogue item, bought or not.
User side (a *query*): the user id, the recency-weighted bag of items bought before a point in
time (the same item table is pooled over it), and dense features (ALS vector folded in from
that bag, content centroid of the bag, customer attributes, history length).

Training queries come from the training window itself: every distinct (user, item, day)
purchase is a target whose query sees the user's purchases up to that day, minus the target's
own same-day rows. Nothing after the target day is visible, as at test time.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, fields

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.interactions import TrainingData
from recsys.models.als_factors import ALSFactors
from recsys.vectors import ItemVectors, l2_normalise

log = logging.getLogger(__name__)

DAY = dt.timedelta(days=1)


@dataclass
class ItemTable:
    """Per-item features over the item universe of one :class:`TrainingData`.

    Attributes:
        item_ids: external ids; row ``i`` is item index ``i`` of the training data.
        categories: (n_items, n_cat) int64 codes, 0 = missing.
        category_names: metadata column per code column.
        vocab_sizes: table size per category (codes < size).
        dense: (n_items, d) float32: content vector, ALS factors, price features.
        known: (n_items,) bool: bought in the training window (its id embedding is trained).
        target_counts: (n_items,) training purchases per item (the logQ sampling distribution).
    """

    item_ids: np.ndarray
    categories: np.ndarray
    category_names: list[str]
    vocab_sizes: list[int]
    dense: np.ndarray
    known: np.ndarray
    target_counts: np.ndarray

    @property
    def n_items(self) -> int:
        """Number of item rows."""
        return len(self.item_ids)


@dataclass
class Queries:
    """A batch-able set of user queries (one per training target, or one per user at inference).

    Attributes:
        user_rows: (n,) user index rows; -1 hides the user id (unknown user).
        hist_indptr: (n + 1,) offsets into ``hist_items`` / ``hist_weights``.
        hist_items: item rows of each query's history bag, most recent first (int32, or int64 for
            a catalogue of 2^31 items or more).
        hist_weights: recency weights, summing to 1 within a query.
        dense: (n, d) user-side dense features: float32, or float16 for a large training set.
    """

    user_rows: np.ndarray
    hist_indptr: np.ndarray
    hist_items: np.ndarray
    hist_weights: np.ndarray
    dense: np.ndarray

    def __len__(self) -> int:
        return len(self.user_rows)

    def subset(self, idx: np.ndarray) -> "Queries":
        """The queries at positions ``idx`` (in that order)."""
        starts, ends = self.hist_indptr[idx], self.hist_indptr[idx + 1]
        lengths = ends - starts
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(idx) else np.empty(0, np.int64)
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return Queries(self.user_rows[idx], indptr, self.hist_items[take], self.hist_weights[take], self.dense[idx])

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Every field as ``{prefix_<field>: array}``, for saving in an ``.npz``."""
        return {f"{prefix}_{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, prefix: str, arrays: dict[str, np.ndarray]) -> "Queries":
        """Inverse of :meth:`arrays`."""
        return cls(**{f.name: arrays[f"{prefix}_{f.name}"] for f in fields(cls)})


@dataclass
class ValidationSet:
    """Queries with their ground truth (catalogue rows bought in the validation window)."""

    queries: Queries
    truth: list[np.ndarray]


def build_item_table(data: TrainingData, vectors: ItemVectors | None, als: ALSFactors, categorical: list[str], kind: str = "fused") -> ItemTable:
    """Item features for every item of ``data.item_index``.

    Args:
        data: the training window (its catalogue and purchases).
        vectors: content vectors (items missing from the file get zero rows); None: no content block.
        als: ALS factors fitted on ``data`` (zero rows for never-bought items).
        categorical: catalogue metadata columns to embed.
        kind: which content vector to use (fused, text or image).

    Raises:
        ValueError: a categorical column is missing from the catalogue.
    """
    items = data.items
    missing = [c for c in categorical if c not in items.columns]
    if missing:
        raise ValueError(f"two-tower: catalogue has no categorical column(s) {missing}")
    codes, sizes = [], []
    for col in categorical:
        # Codes by sorted value so the table layout does not depend on catalogue row order.
        values = items[col].cast(pl.Utf8)
        vocab = sorted(v for v in values.unique().to_list() if v is not None)
        lookup = {v: i + 1 for i, v in enumerate(vocab)}
        codes.append(np.fromiter((lookup.get(v, 0) for v in values.to_list()), dtype=np.int64, count=len(values)))
        sizes.append(len(vocab) + 1)
    categories = np.stack(codes, axis=1) if codes else np.zeros((data.n_items, 0), dtype=np.int64)

    e = data.encoded
    counts = np.bincount(e["item_idx"].to_numpy(), minlength=data.n_items).astype(np.float64)
    price = e.group_by("item_idx").agg(pl.col("price").mean()) if "price" in e.columns else None
    price_feats = np.zeros((data.n_items, 2), dtype=np.float32)
    if price is not None and price.height:
        p = np.log(np.clip(price["price"].fill_null(0).to_numpy().astype(np.float64), 1e-6, None))
        p = (p - p.mean()) / (p.std() + 1e-6)
        price_feats[price["item_idx"].to_numpy(), 0] = p
        price_feats[price["item_idx"].to_numpy(), 1] = 1.0  # "price known" flag: cold items have none
    content = vectors.aligned(data.item_index.ids, kind) if vectors is not None else np.zeros((data.n_items, 0), dtype=np.float32)
    dense = np.concatenate([content, als.item_vectors(data.item_index.ids), price_feats], axis=1).astype(np.float32)
    return ItemTable(data.item_index.ids, categories, list(categorical), sizes, dense, counts > 0, counts)


def user_attributes(data: TrainingData, categorical: list[str], numeric: list[str]) -> np.ndarray:
    """(n_users, a) customer attributes: one-hot categoricals, standardised numerics, missing flags.

    Users without a customer record get all zeros (plus a 0 "has record" flag).

    Args:
        data: the training window (its users table and user index).
        categorical: customer columns to one-hot (missing values become their own category).
        numeric: customer columns to standardise, each with a "value known" flag.

    Returns:
        float32 array; the first column is the "has record" flag. Columns absent from the users
        table are skipped; without a users table the result is (n_users, 1) zeros.
    """
    n = data.n_users
    if data.users is None or data.users.is_empty():
        return np.zeros((n, 1), dtype=np.float32)
    users = data.users.filter(pl.col("user_id").is_in(pl.Series(data.user_index.ids.tolist()).implode()))
    rows = data.user_index.lookup(users["user_id"].to_list())
    blocks = [np.zeros((n, 1), dtype=np.float32)]
    blocks[0][rows, 0] = 1.0
    for col in categorical:
        if col not in users.columns:
            continue
        values = users[col].cast(pl.Utf8).fill_null("<null>").to_list()
        vocab = sorted(set(values))
        block = np.zeros((n, len(vocab)), dtype=np.float32)
        block[rows, [vocab.index(v) for v in values]] = 1.0
        blocks.append(block)
    for col in numeric:
        if col not in users.columns:
            continue
        x = users[col].cast(pl.Float64).to_numpy()
        ok = np.isfinite(x)
        mean, std = (x[ok].mean(), x[ok].std() + 1e-6) if ok.any() else (0.0, 1.0)
        block = np.zeros((n, 2), dtype=np.float32)
        block[rows[ok], 0] = (x[ok] - mean) / std
        block[rows[ok], 1] = 1.0
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def _queries_from_context(
    context: pl.DataFrame,
    user_rows: np.ndarray,
    items: ItemTable,
    als: ALSFactors,
    attributes: np.ndarray,
    content_dim: int,
    half_life: float,
    max_history: int,
    out: np.ndarray | None = None,
) -> Queries:
    """Assemble queries from a long frame (query, item_idx, age) of history rows.

    Args:
        out: (n, d) rows to write the dense features into (a slice of a larger array, float32 or
            float16); None allocates a float32 array.
    """
    n = len(user_rows)
    ctx = (
        context.sort(["query", "age", "item_idx"])
        .with_columns(pl.int_range(pl.len()).over("query").alias("_r"))
        .filter(pl.col("_r") < max_history)
        .with_columns((0.5 ** (pl.col("age") / half_life)).alias("w"))
        .with_columns((pl.col("w") / pl.col("w").sum().over("query")).alias("w"))
    )
    q = ctx["query"].to_numpy().astype(np.int64)
    # int32 item rows: a training set's history bags are its largest array after the dense
    # features (4M examples x ~30 rows at the 100x rung); batches widen them to int64.
    item_rows = ctx["item_idx"].to_numpy().astype(np.int32 if items.n_items < 2**31 else np.int64)
    weights = ctx["w"].to_numpy().astype(np.float32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(q, minlength=n), out=indptr[1:])

    bag = sp.csr_matrix((np.ones(len(q), dtype=np.float32), (q, item_rows)), shape=(n, items.n_items))
    bag.sum_duplicates()
    weighted = sp.csr_matrix((weights, (q, item_rows)), shape=(n, items.n_items))
    n_hist = np.diff(indptr).astype(np.float32)
    newest = ctx.group_by("query").agg(pl.col("age").min())
    recency = np.full(n, 30.0, dtype=np.float32)
    recency[newest["query"].to_numpy()] = newest["age"].to_numpy()
    attrs = np.where(user_rows[:, None] >= 0, attributes[np.clip(user_rows, 0, None)], 0.0).astype(np.float32)
    stats = np.stack([np.log1p(n_hist), np.log1p(recency)], axis=1).astype(np.float32)
    # [ALS fold-in | content centroid | attributes | stats], written in place chunk by chunk: the
    # fold-ins and centroids of every query at once, their normalised copy and the concatenation
    # were four (n x d) arrays, 13.1 GB peak in the 10x serving fold (n = 1.77M examples).
    a = als.dim
    c = a + content_dim
    width = c + attrs.shape[1] + stats.shape[1]
    dense = np.empty((n, width), dtype=np.float32) if out is None else out
    if dense.shape != (n, width):
        raise ValueError(f"query features: out has shape {dense.shape}, expected {(n, width)}")
    content = np.ascontiguousarray(items.dense[:, :content_dim])
    for lo in range(0, n, CENTROID_CHUNK):  # each row is its own solve and its own sum: chunks change no value
        hi = min(lo + CENTROID_CHUNK, n)
        dense[lo:hi, :a] = als.fold_in(bag[lo:hi])
        dense[lo:hi, a:c] = l2_normalise(np.asarray(weighted[lo:hi] @ content))
    dense[:, c : c + attrs.shape[1]] = attrs
    dense[:, c + attrs.shape[1] :] = stats
    return Queries(user_rows.astype(np.int64), indptr, item_rows, weights, dense)


CENTROID_CHUNK = 65_536  # queries whose ALS fold-ins and content centroids are computed at once (~64 MB at 256 dimensions)
HALF_PRECISION_BYTES = 2**30  # training examples' dense features above this (in float32) are stored as float16


EXAMPLE_CHUNK = 100_000  # targets whose history windows are gathered at once (memory: chunk x window)
QUERY_CHUNK = 500_000  # targets turned into queries at once: their history rows (~x20) are the largest temporaries


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_seconds() / 86_400.0


def training_examples(
    data: TrainingData,
    items: ItemTable,
    als: ALSFactors,
    attributes: np.ndarray,
    half_life: float,
    max_history: int,
    example_days: int | None = None,
    max_examples: int | None = None,
) -> tuple[Queries, np.ndarray]:
    """One query per distinct (user, item, day) purchase with a non-empty earlier-or-same-day history.

    A query's history is the user's ``max_history`` most recent interactions up to the end of
    that day (newest day first, then by item row), the target itself on that day left out. Each
    query reads only its own window of the user's log, so the cost grows with the log times
    ``max_history``, not with the square of a user's history (a grocery household has hundreds of
    baskets).

    Args:
        data: the training window.
        items: the item table of ``data``.
        als: ALS factors fitted on ``data`` (the history bag is folded in).
        attributes: (n_users, a) from :func:`user_attributes`.
        half_life: half-life in days of the history recency weights.
        max_history: most recent history items kept per query.
        example_days: only purchases of the window's last ``example_days`` days become queries.
        max_examples: at most this many, the most recent (by day, then user and item row): each
            query's ALS fold-in is a least-squares solve, ~60% of a fit's time outside training on
            a 10x log.

    Returns:
        (queries, target item rows), ordered by (day, user, item) so the result is deterministic.
    """
    e = data.encoded.select(
        pl.col("user_idx").cast(pl.Int64), pl.col("item_idx").cast(pl.Int64),
        (pl.col("timestamp").dt.truncate("1d").dt.epoch("d")).cast(pl.Int64).alias("day"),
    )
    targets = e.unique().sort(["day", "user_idx", "item_idx"])
    if example_days is not None and e.height:
        last_day = int(e["day"].to_numpy().max())
        targets = targets.filter(pl.col("day") > last_day - example_days)
    if max_examples is not None and targets.height > max_examples:
        log.info("two-tower: the %d most recent of %d purchases become examples (max_examples)", max_examples, targets.height)
        targets = targets.tail(max_examples)
    duplicates = int(e.group_by(["user_idx", "item_idx", "day"]).len()["len"].to_numpy().max()) if e.height else 1
    # Plain int32 copies of the sorted log and the targets; the frames go before the queries are
    # built (at the 100x rung they held ~1.5 GB through the whole build and the training after it).
    log_rows = e.sort(["user_idx", "day", "item_idx"], descending=[False, True, False])
    user, day, item = (log_rows[c].to_numpy().astype(np.int32) for c in ("user_idx", "day", "item_idx"))
    t_user, t_day, t_item = (targets[c].to_numpy().astype(np.int32) for c in ("user_idx", "day", "item_idx"))
    del e, targets, log_rows
    # Rows sorted by (user, newest day first): a target's history starts at the user's first row on
    # or before its day and runs to the user's last row (keys in int64: users x days passes 2^31).
    span = int(day.max() - day.min()) + 2 if len(day) else 2
    newest = int(day.max()) if len(day) else 0
    key = user.astype(np.int64) * span + (newest - day)
    first = np.searchsorted(key, t_user.astype(np.int64) * span + (newest - t_day), side="left") if len(day) else np.zeros(0, np.int64)
    del key
    user_end = np.searchsorted(user, t_user, side="right")
    width = max_history + duplicates  # the target's own same-day rows are the only ones dropped from a window
    content_dim = _content_dim(items, als)
    features = als.dim + content_dim + attributes.shape[1] + 2
    # Dense features of every example in one array, float16 when float32 would pass
    # HALF_PRECISION_BYTES (4M examples x 330 features are 5.3 GB in float32; batches widen them
    # back, and the ~1e-3 relative rounding is far below the training noise). Rows past the
    # examples with a history are never written, so never resident.
    half = len(t_item) * features * 4 > HALF_PRECISION_BYTES
    dense = np.empty((len(t_item), features), dtype=np.float16 if half else np.float32)
    parts: list[Queries] = []
    kept: list[np.ndarray] = []
    filled = 0
    # Queries are built QUERY_CHUNK targets at a time: each query's history rows (up to max_history)
    # and their sorted, weighted and sparse copies were ~12 GB for the 100x rung's 4M examples at once.
    for start in range(0, len(t_item), QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, len(t_item))
        queries, hist_items, ages = [], [], []
        for lo in range(start, stop, EXAMPLE_CHUNK):
            hi = min(lo + EXAMPLE_CHUNK, stop)
            idx = first[lo:hi, None] + np.arange(width)[None, :]
            valid = idx < user_end[lo:hi, None]
            idx = np.where(valid, idx, 0)
            own = (item[idx] == t_item[lo:hi, None]) & (day[idx] == t_day[lo:hi, None])
            keep = valid & ~own
            keep &= np.cumsum(keep, axis=1) <= max_history
            rows, cols = np.nonzero(keep)
            queries.append(rows + lo)
            hist_items.append(item[idx[rows, cols]])
            ages.append((t_day[lo:hi][rows] - day[idx[rows, cols]]).astype(np.float64))
        q = np.concatenate(queries) if queries else np.zeros(0, np.int64)
        has_history = np.unique(q)
        renumber = np.full(stop - start, -1, dtype=np.int64)
        renumber[has_history - start] = np.arange(len(has_history))
        context = pl.DataFrame(
            {
                "query": renumber[q - start],
                "item_idx": np.concatenate(hist_items) if hist_items else np.zeros(0, np.int64),
                "age": np.concatenate(ages) if ages else np.zeros(0),
            }
        )
        del queries, hist_items, ages, q
        part = _queries_from_context(
            context, t_user[has_history], items, als, attributes, content_dim, half_life, max_history,
            out=dense[filled : filled + len(has_history)],
        )
        parts.append(part)
        kept.append(has_history)
        filled += len(has_history)
    chosen = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return _concat_queries(parts, dense[:filled]), t_item[chosen].astype(np.int64)


def _concat_queries(parts: list[Queries], dense: np.ndarray) -> Queries:
    """One :class:`Queries` from consecutive parts whose dense rows are already ``dense``."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(p.hist_items) for p in parts[:-1]])
    indptr = np.concatenate([np.zeros(1, np.int64)] + [p.hist_indptr[1:] + off for p, off in zip(parts, offsets)])
    return Queries(
        np.concatenate([p.user_rows for p in parts]) if parts else np.zeros(0, np.int64),
        indptr,
        np.concatenate([p.hist_items for p in parts]) if parts else np.zeros(0, np.int64),
        np.concatenate([p.hist_weights for p in parts]) if parts else np.zeros(0, np.float32),
        dense,
    )


def inference_queries(
    data: TrainingData,
    user_rows: np.ndarray,
    items: ItemTable,
    als: ALSFactors,
    attributes: np.ndarray,
    half_life: float,
    max_history: int,
    as_of: dt.datetime | None = None,
) -> Queries:
    """Queries for known users as of ``as_of`` (default: the end of the training window).

    Args:
        data: the training window (the users' histories).
        user_rows: rows of ``data.user_index``.
        items: the item table of ``data``.
        als: ALS factors fitted on ``data``.
        attributes: (n_users, a) from :func:`user_attributes`.
        half_life: half-life in days of the history recency weights.
        max_history: most recent history items kept per query.
        as_of: the time history ages are measured from.

    Returns:
        One query per entry of ``user_rows``, in that order.
    """
    as_of = as_of or data.as_of
    frame = pl.DataFrame({"user_idx": user_rows.astype(np.int64), "query": np.arange(len(user_rows), dtype=np.int64)})
    e = data.encoded.select("user_idx", "item_idx", "timestamp")
    context = frame.join(e, on="user_idx").select(
        "query", "item_idx", _days(pl.lit(as_of) - pl.col("timestamp").dt.truncate("1d")).alias("age")
    )
    return _queries_from_context(
        context, user_rows, items, als, attributes, _content_dim(items, als), half_life, max_history
    )


def _content_dim(items: ItemTable, als: ALSFactors) -> int:
    return items.dense.shape[1] - als.dim - 2
