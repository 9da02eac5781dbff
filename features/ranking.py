"""Reranker features for (user, candidate) pairs: ONE implementation for training and serving.

Training builds :class:`UserState` objects from the training window and calls
:meth:`RankingFeatures.compute`; the server builds the same states from the bundle (or from an
anonymous visitor's context) and calls the same method, so a pair gets identical features on
both paths (``tests/unit/test_ranking_features.py`` checks that).

Feature groups: multimodal similarity (image / text / fused vector of the candidate vs the
user's history centroid, last item and max over recent items), dot-product scores of factor
models (two-tower, ALS), candidate sources and ranks, click history (bought before, how often,
days since; affinity to the candidate's categories), item metadata (categorical codes),
popularity over 1 / 3 / 7 days and its trend, price relative to the user's usual price, user
activity, customer attributes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.data.interactions import IdIndex, TrainingData
from recsys.data.stats import item_counts
from recsys.vectors import ItemVectors

MISSING = np.nan
CONTENT_KINDS = ("image", "text", "fused")


@dataclass
class UserState:
    """What the features know about one user at ``as_of``.

    Attributes:
        user_id: external id ("" for an anonymous visitor).
        item_rows: history item rows, oldest first.
        days_ago: days before ``as_of`` of each history row.
        prices: price paid for each history row (NaN when unknown).
        attributes: customer attributes (numeric values or category strings; None when unknown).
        vectors: user vector per factor model (e.g. "als", "two_tower"); missing models score NaN.
    """

    user_id: str
    item_rows: np.ndarray
    days_ago: np.ndarray
    prices: np.ndarray
    attributes: dict[str, float | str | None] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class CandidateSet:
    """One user's candidates: item rows, per source its rank (0-based, -1 = not found), and scores
    (``scores["merged"]``: the fused candidate score)."""

    item_rows: np.ndarray
    ranks: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]


@dataclass
class ItemTable:
    """Static per-item arrays aligned with the item index (row ``i`` = item ``i``).

    Attributes:
        index: item ids.
        categorical: column -> int codes (-1 = missing); ``categories`` holds the code labels.
        price: mean training price per item (NaN when never sold).
        popularity: "pop_1d", "pop_3d", "pop_7d" counts before ``as_of`` and "trend".
        content: kind -> (n_items, d) vectors (zero rows when absent); ``has_image`` flags photos.
        factors: model -> (n_items, d) item vectors for dot-product scores.
    """

    index: IdIndex
    categorical: dict[str, np.ndarray]
    categories: dict[str, list[str]]
    price: np.ndarray
    popularity: dict[str, np.ndarray]
    content: dict[str, np.ndarray]
    has_image: np.ndarray
    factors: dict[str, np.ndarray]


class RankingFeatures:
    """Computes the feature matrix for candidate pairs.

    Args:
        items: the static item table.
        user_categorical: customer attribute columns treated as categories (value -> code mapping).
        user_numeric: numeric customer attribute columns.
        sources: candidate source names, in a fixed order (feature columns are named after them).
        recent: how many most recent history items the "max over recent" similarity looks at.
        half_life_days: recency weighting of the history centroid.
    """

    def __init__(
        self,
        items: ItemTable,
        user_categorical: dict[str, list[str]],
        user_numeric: list[str],
        sources: list[str],
        recent: int = 10,
        half_life_days: float = 3.0,
    ):
        self.items = items
        self.user_categorical = user_categorical
        self._user_codes = {c: {v: i for i, v in enumerate(values)} for c, values in user_categorical.items()}
        self.user_numeric = user_numeric
        self.sources = sources
        self.recent = recent
        self.half_life_days = half_life_days

    @property
    def categorical_features(self) -> list[str]:
        """Names of feature columns LightGBM should treat as categorical."""
        return [f"item_{c}" for c in self.items.categorical] + [f"user_{c}" for c in self.user_categorical]

    @property
    def feature_names(self) -> list[str]:
        """Column names of the feature matrix, in column order."""
        names = []
        for kind in CONTENT_KINDS:
            names += [f"sim_{kind}_centroid", f"sim_{kind}_last", f"sim_{kind}_max_recent"]
        names += [f"score_{m}" for m in sorted(self.items.factors)]
        names += [f"src_{s}_rank" for s in self.sources]
        names += ["src_count", "src_merged_score"]
        names += ["hist_item_count", "hist_item_days_since"]
        names += [f"affinity_{c}" for c in self.items.categorical]
        names += ["item_price", "price_ratio", "pop_1d", "pop_3d", "pop_7d", "pop_trend", "item_has_image"]
        names += ["user_n_purchases", "user_n_distinct_items", "user_days_since_last", "user_n_active_days"]
        names += [f"user_{c}" for c in self.user_numeric]
        names += self.categorical_features
        return names

    def compute(self, users: list[UserState], candidates: list[CandidateSet]) -> np.ndarray:
        """Features for every (user, candidate) pair, users in order, candidates in their order.

        Args:
            users: one state per user.
            candidates: one candidate set per user (same order).

        Returns:
            float32 array (total pairs, len(feature_names)); NaN marks a missing value.
        """
        if len(users) != len(candidates):
            raise ValueError(f"{len(users)} users but {len(candidates)} candidate sets")
        blocks = [self._user_block(u, c) for u, c in zip(users, candidates)]
        if not blocks:
            return np.zeros((0, len(self.feature_names)), dtype=np.float32)
        return np.concatenate(blocks, axis=0)

    def _user_block(self, user: UserState, cand: CandidateSet) -> np.ndarray:
        it = self.items
        rows = cand.item_rows
        n = len(rows)
        hist = user.item_rows
        cols: list[np.ndarray] = []
        # Ages from the user's latest row (weight 1): a long log cannot underflow every weight to 0, and the
        # common factor this drops cancels when the centroid is normalised.
        recency = 0.5 ** ((user.days_ago - user.days_ago.min()) / self.half_life_days) if len(hist) else np.zeros(0)

        for kind in CONTENT_KINDS:
            cols += self._similarities(it.content[kind], rows, hist, recency, image=kind == "image")
        for model in sorted(it.factors):
            vec = user.vectors.get(model)
            cols.append(it.factors[model][rows] @ vec if vec is not None else np.full(n, MISSING))
        found = np.zeros(n)
        for s in self.sources:
            rank = cand.ranks.get(s)
            has = rank >= 0 if rank is not None else np.zeros(n, dtype=bool)
            found += has
            cols.append(np.where(has, rank, MISSING) if rank is not None else np.full(n, MISSING))
        cols.append(found)
        merged = cand.scores.get("merged")
        cols.append(merged if merged is not None else np.full(n, MISSING))

        # Click history of this exact item.
        if len(hist):
            order = np.argsort(hist, kind="stable")
            sorted_hist = hist[order]
            left = np.searchsorted(sorted_hist, rows, "left")
            right = np.searchsorted(sorted_hist, rows, "right")
            counts = (right - left).astype(np.float64)
            min_days = np.full(n, MISSING)
            days_sorted = user.days_ago[order]
            for j in np.flatnonzero(counts):
                min_days[j] = days_sorted[left[j] : right[j]].min()
        else:
            counts, min_days = np.zeros(n), np.full(n, MISSING)
        cols += [counts, min_days]

        # Affinity: share of the user's purchases in the candidate's category.
        for c, codes in it.categorical.items():
            cand_codes = codes[rows]
            if len(hist):
                hist_codes = codes[hist]
                valid = hist_codes[hist_codes >= 0]
                share = np.bincount(valid, minlength=int(codes.max()) + 1) / max(len(hist), 1) if len(valid) else np.zeros(int(codes.max()) + 1)
                cols.append(np.where(cand_codes >= 0, share[np.maximum(cand_codes, 0)], MISSING))
            else:
                cols.append(np.full(n, MISSING))

        price = it.price[rows]
        known_prices = user.prices[np.isfinite(user.prices)] if len(user.prices) else np.zeros(0)
        user_price = known_prices.mean() if len(known_prices) else MISSING
        cols += [price, price / user_price if np.isfinite(user_price) and user_price > 0 else np.full(n, MISSING)]
        cols += [it.popularity[k][rows] for k in ("pop_1d", "pop_3d", "pop_7d", "trend")]
        cols.append(it.has_image[rows].astype(np.float64))

        days = np.floor(user.days_ago) if len(hist) else np.zeros(0)
        activity = [
            float(len(hist)),
            float(len(np.unique(hist))),
            float(user.days_ago.min()) if len(hist) else MISSING,
            float(len(np.unique(days))),
        ]
        cols += [np.full(n, v) for v in activity]
        for c in self.user_numeric:
            v = user.attributes.get(c)
            cols.append(np.full(n, float(v) if isinstance(v, int | float) and v == v else MISSING))
        for c, codes in it.categorical.items():
            cols.append(np.where(codes[rows] >= 0, codes[rows], MISSING).astype(np.float64))
        for c in self.user_categorical:
            code = self._user_codes[c].get(str(user.attributes.get(c)), -1)
            cols.append(np.full(n, code if code >= 0 else MISSING, dtype=np.float64))
        return np.column_stack(cols).astype(np.float32)

    def _similarities(self, vectors: np.ndarray, rows: np.ndarray, hist: np.ndarray, recency: np.ndarray, image: bool) -> list[np.ndarray]:
        n = len(rows)
        missing = [np.full(n, MISSING)] * 3
        if not len(hist):
            return missing
        if image:  # only photographed history items are gathered: a text-only catalogue never reads its zero image rows
            keep = self.items.has_image[hist]
            if not keep.any():
                return missing
            hv, rec = vectors[hist[keep]], recency[keep]
        else:
            hv, rec = vectors[hist], recency
        if not len(hv):
            return missing
        cv = vectors[rows]
        centroid = (rec[:, None] * hv).sum(axis=0)
        norm = np.linalg.norm(centroid)
        sims_recent = cv @ hv[-self.recent :].T
        out = [cv @ (centroid / norm) if norm > 0 else np.full(n, MISSING), sims_recent[:, -1], sims_recent.max(axis=1)]
        if image:
            no_image = ~self.items.has_image[rows]
            out = [np.where(no_image, MISSING, o) for o in out]
        return out


def build_item_table(
    data: TrainingData,
    categorical: list[str],
    vectors: ItemVectors | None,
    factors: dict[str, np.ndarray],
) -> ItemTable:
    """Static item arrays from the training window (only data before ``data.as_of``).

    Args:
        data: the training window.
        categorical: catalogue columns to encode.
        vectors: content vectors (None -> zero vectors, similarities become NaN-free zeros).
        factors: model -> item vectors aligned with ``data.item_index``.
    """
    items = data.items
    codes: dict[str, np.ndarray] = {}
    cats: dict[str, list[str]] = {}
    for c in categorical:
        values = items[c].cast(pl.String)
        labels = sorted(v for v in values.unique().to_list() if v is not None)
        mapping = {v: i for i, v in enumerate(labels)}
        codes[c] = np.asarray([mapping.get(v, -1) if v is not None else -1 for v in values.to_list()], dtype=np.int64)
        cats[c] = labels
    price = np.full(data.n_items, MISSING)
    if "price" in data.interactions.columns:
        mean = data.interactions.group_by("item_id").agg(pl.col("price").mean())
        rows = data.item_index.lookup(mean["item_id"].to_list())
        ok = rows >= 0
        price[rows[ok]] = mean["price"].to_numpy()[ok]
    pop = {f"pop_{d}d": item_counts(data, d) for d in (1, 3, 7)}
    # Trend: last day's sales against the 7-day daily average (>1 = rising).
    pop["trend"] = (pop["pop_1d"] + 1.0) / (pop["pop_7d"] / 7.0 + 1.0)
    ids = data.item_index.ids
    if vectors is not None:
        content = {k: vectors.aligned(ids, k) for k in CONTENT_KINDS}
        # The stored flags, not a scan of the image matrix: at the 100x rung that scan mapped its
        # 634 MB of (all-zero, text-only catalogue) rows into every stage that builds features.
        rows = vectors.index.lookup(list(ids))
        has_image = np.where(rows >= 0, np.asarray(vectors.has_image, dtype=bool)[np.maximum(rows, 0)], False)
    else:
        content = {k: np.zeros((len(ids), 1), dtype=np.float32) for k in CONTENT_KINDS}
        has_image = np.zeros(len(ids), dtype=bool)
    return ItemTable(data.item_index, codes, cats, price, pop, content, has_image, factors)


def _history_columns(e: pl.DataFrame, as_of: dt.datetime) -> list[pl.Expr]:
    """``days_ago`` and ``price`` of each interaction row (one formula for every path)."""
    price = pl.col("price") if "price" in e.columns else pl.lit(None, dtype=pl.Float32)
    return [((pl.lit(as_of) - pl.col("timestamp")).dt.total_seconds() / 86400.0).alias("days_ago"), price.alias("price")]


def user_states(
    data: TrainingData,
    user_ids: list[str],
    attributes: list[str],
    vectors: dict[str, dict[str, np.ndarray]] | None = None,
) -> list[UserState]:
    """States of known users from the training window (unknown users get an empty history).

    Args:
        data: the training window (history strictly before ``data.as_of``).
        user_ids: users to describe.
        attributes: customer attribute columns to attach (from ``data.users``).
        vectors: model -> {user_id: vector}.
    """
    wanted = pl.DataFrame({"user_id": user_ids})
    e = data.encoded.join(wanted, on="user_id", how="semi")
    grouped = e.with_columns(_history_columns(e, data.as_of)).group_by("user_id", maintain_order=True).agg(pl.col("item_idx"), pl.col("days_ago"), pl.col("price"))
    hist = {r[0]: r[1:] for r in grouped.iter_rows()}
    attrs: dict[str, dict[str, float | str | None]] = {}
    if data.users is not None and attributes:
        cols = [c for c in attributes if c in data.users.columns]
        sub = data.users.join(wanted, on="user_id", how="semi").select("user_id", *cols)
        attrs = {r["user_id"]: {c: r[c] for c in cols} for r in sub.iter_rows(named=True)}
    out = []
    for u in user_ids:
        rows, days, prices = hist.get(u, ([], [], []))
        out.append(
            UserState(
                u,
                np.asarray(rows, dtype=np.int64),
                np.asarray(days, dtype=np.float64),
                np.asarray([p if p is not None else MISSING for p in prices], dtype=np.float64),
                attrs.get(u, {}),
                {m: v[u] for m, v in (vectors or {}).items() if u in v},
            )
        )
    return out


class UserStateLookup:
    """:func:`user_states` for one user at a time without scanning the window on every call (serving).

    The window's rows are grouped by user once (a stable sort, so each user's rows keep their log
    order) and kept as arrays; a state is then a slice. It gives exactly what :func:`user_states`
    gives (``tests/unit/test_ranking_features.py`` checks that).

    Args:
        data: the training window.
        attributes: customer attribute columns to attach.
    """

    def __init__(self, data: TrainingData, attributes: list[str]):
        e = data.encoded
        e = e.select("user_id", "item_idx", *_history_columns(e, data.as_of)).with_columns(pl.col("price").cast(pl.Float64))
        e = e.with_columns(pl.col("user_id").cast(pl.String)).sort("user_id", maintain_order=True)
        # Each user's rows are one run of the sorted ids. Runs, not a numpy unique: the ids as a
        # numpy string array were 64 x 4 bytes a row, 6 GB of the 100x rung's 24M rows (killed there).
        runs = e.select(pl.col("user_id").rle()).unnest("user_id")
        lengths = runs["len"].to_numpy().astype(np.int64)
        last = np.cumsum(lengths)
        first = last - lengths
        self._slices = dict(zip(runs["value"].to_list(), zip(first.tolist(), last.tolist(), strict=True), strict=True))
        self._items = e["item_idx"].to_numpy().astype(np.int64)
        self._days = e["days_ago"].to_numpy().astype(np.float64)
        self._prices = e["price"].fill_null(MISSING).to_numpy().astype(np.float64)
        self._attrs: dict[str, dict[str, float | str | None]] = {}
        if data.users is not None and attributes:
            cols = [c for c in attributes if c in data.users.columns]
            # the last row wins for a duplicated id, as in user_states
            self._attrs = {r["user_id"]: {c: r[c] for c in cols} for r in data.users.select("user_id", *cols).iter_rows(named=True)}

    def state(self, user_id: str, vectors: dict[str, np.ndarray] | None = None) -> UserState:
        """The user's state (empty history for an unknown user).

        Args:
            user_id: the customer.
            vectors: model name -> this user's vector.

        Returns:
            A state holding copies of the user's rows.
        """
        start, end = self._slices.get(user_id, (0, 0))
        return UserState(
            user_id,
            self._items[start:end].copy(),
            self._days[start:end].copy(),
            self._prices[start:end].copy(),
            dict(self._attrs.get(user_id, {})),
            dict(vectors or {}),
        )


def anonymous_state(item_rows: list[int], as_of: dt.datetime | None = None, vectors: dict[str, np.ndarray] | None = None) -> UserState:
    """A visitor known only by items they looked at just now (most recent last, all 'today').

    Args:
        item_rows: the visit's item rows, most recent last.
        as_of: not used (every item is 0 days old); kept for the callers' signature.
        vectors: model name -> the visitor's vector (e.g. an ALS fold-in).

    Returns:
        A state with an empty user id, prices unknown and no attributes.
    """
    rows = np.asarray(item_rows, dtype=np.int64)
    return UserState("", rows, np.zeros(len(rows)), np.full(len(rows), MISSING), {}, vectors or {})
