"""Synthetic purchase logs shaped like the H&M sample, at 10x, 100x (or any) of its size.

The scale ladder needs logs larger than the real H&M week (240,311 purchases) that still behave like
it. :func:`fit_profile` measures the real sample once; :func:`generate` writes ``transactions.parquet``,
``articles.parquet`` and ``customers.parquet`` with the same columns and dtypes as the H&M files, so a
config derived from ``configs/hm.yaml`` (``configs/synthetic_hm.yaml``) reads them unchanged.

How a log is made (empirical where the sample has the information, one stated assumption where not):

* **Baskets** (one customer's rows on one day) are copies of real baskets, drawn in shuffled rounds
  (1x over 7 days uses every real basket once, on its own day). A basket keeps its real size, its
  within-basket duplicates (2 of an article), channels, prices and its mix of product types, so
  basket size, same-basket repeat rate, channel share and price per product type follow H&M.
* **Items**: real products are copied (all their articles, new product codes and article ids, the
  catalogue row with its metadata and text otherwise unchanged) until the sold universe has
  ``items`` articles; a basket row of a real product goes to one of its copies, the same copy for
  the whole basket (so "same product, other colour" co-purchases survive). A copy's share of its
  product follows a mean-reverting walk of log-popularity whose day-to-day correlation is fitted on
  H&M and whose spread is calibrated (by replaying the generator) so products drift day to day as
  much as H&M's do (noise-corrected); a few copies launch mid-window at the measured launch rate.
  A synthetic day that needs r times its real day's baskets takes only 1/r of them from that day
  (the rest from the whole week), so one real day's sampling noise is not multiplied into fake
  trends. Below 1x, products without a copy send their rows to a copy of a product of the same
  type. The catalogue adds never-sold articles in the real proportion (unsold siblings first, then
  unsold products), up to 1M rows by default.
* **Customers** get a number of active days from a zero-truncated negative binomial fitted to the
  real days-per-customer distribution (its mean set by baskets / customers), on distinct days drawn
  by the real weekday volume. A basket after a customer's first one re-buys one of the customer's
  recent articles at the measured cross-day repeat rate. ``customers.parquet`` copies real attribute
  rows onto the measured share of customers, plus the real share of customers with no purchase.

Sizes: ``rows = 240,311 x scale`` over ``days`` (default 7, the window ending 2020-09-22 like the
sample, so the last-day split of ``configs/hm.yaml`` works; more days spread the same rows),
``items = 17,986 x scale^0.384`` (100x sells as many articles as the whole H&M catalogue has),
``customers = 68,984 x scale^0.62`` above 1x (100x: ~1.2M, the full H&M customer base) and
proportional below. With 7 days, 100x customers then shop on ~6.4 of 7 days: pass ``--days`` or
``--customers`` for a log whose customers look like H&M's (``--check`` shows the difference).
Longer windows cycle the real week (day d copies the real weekday of the same position).

``--check`` measures the output with the same code as the real sample and prints both side by side.

Usage::

    python bench/synthetic_log.py --scale 10 --out artifacts/synthetic/hm_x10 --check
    python bench/synthetic_log.py --scale 100 --out artifacts/synthetic/hm_x100 --items 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import gammaln

from recsys.atomic import write_dir

log = logging.getLogger("synthetic_log")

DEFAULT_HM_DIR = Path(os.environ.get("RECSYS_DATA_DIR", ROOT.parent / "shared" / "data" / "hm"))
TRANSACTIONS, ARTICLES, CUSTOMERS = "transactions.parquet", "articles.parquet", "customers.parquet"

CUSTOMER_EXPONENT = 0.62  # 68,984 x 100^0.62 ~ 1.2M customers at 100x (the size of H&M's customer base)
DEFAULT_MAX_CATALOGUE = 1_000_000  # the default catalogue stops growing here (``--catalogue`` overrides)
RECENT_ITEMS = 4  # articles remembered per customer for cross-day repeats
DRIFT_MIN_COUNT = 20  # products need this many purchases on both days to enter the drift estimate
LAUNCH_MIN_COUNT = 30  # products this popular whose first sale is on day >= 2 count as launches
_MASK53 = 2.0**-53


# --------------------------------------------------------------------------------------------- profile


@dataclass
class LogProfile:
    """What :func:`generate` reproduces, measured on a real H&M-shaped log.

    The basket arrays are the real log grouped into baskets (one customer's rows on one day), ordered
    by day; sold articles are ordered by product so ``product_start`` delimits each product's articles.
    """

    end_date: dt.date
    n_days: int
    n_rows: int
    n_customers: int
    articles: pl.DataFrame  # the real catalogue (H&M schema): rows are copied with new ids
    customers: pl.DataFrame  # real customer attribute rows, copied onto synthetic customers
    transaction_schema: dict[str, pl.DataType]
    day_basket_start: np.ndarray  # (n_days + 1,) first basket of each real day
    basket_start: np.ndarray  # (n_baskets + 1,) first row of each basket
    row_article: np.ndarray  # sold-article index of each row
    row_price: np.ndarray
    row_channel: np.ndarray
    sold_catalogue_row: np.ndarray  # row of ``articles`` of each sold article
    article_product: np.ndarray  # sold product of each sold article
    product_start: np.ndarray  # (n_products + 1,) first sold article of each sold product
    product_type: np.ndarray  # product type code of each sold product (proxies below 1x)
    product_rows: np.ndarray  # purchases of each sold product
    product_daily: np.ndarray  # (n_products, n_days) purchases of each sold product per day
    sibling_start: np.ndarray  # (n_products + 1,) CSR of each sold product's never-sold articles
    sibling_rows: np.ndarray
    unsold_start: np.ndarray  # CSR of the catalogue rows of products never sold in the window
    unsold_rows: np.ndarray
    days_shape: float  # negative-binomial shape of active days per customer
    cross_repeat: float  # P(an article of a later basket re-buys one of the customer's earlier ones)
    drift_sigma: float  # daily change of a product's log-popularity (noise-corrected sd)
    drift_persistence: float  # day-to-day correlation of log-popularity (mean-reverting walk)
    launch_rate: float  # share of products launched per day
    attribute_share: float  # share of active customers with a customers.parquet row
    extra_customer_ratio: float  # customers.parquet rows without a purchase, per active customer
    stats: dict[str, float]

    @property
    def n_baskets(self) -> int:
        """Baskets (customer-days) in the real log."""
        return len(self.basket_start) - 1

    @property
    def n_sold(self) -> int:
        """Distinct articles bought in the real log."""
        return len(self.sold_catalogue_row)

    @property
    def mean_basket(self) -> float:
        """Rows per basket in the real log."""
        return self.n_rows / self.n_baskets

    @property
    def items_exponent(self) -> float:
        """Growth of sold articles with scale: 100x sells as many articles as the real catalogue holds."""
        return math.log(max(self.articles.height, self.n_sold + 1) / self.n_sold) / math.log(100)

    @property
    def day_weights(self) -> np.ndarray:
        """Baskets per real day (the weekday volume pattern)."""
        return np.diff(self.day_basket_start).astype(np.float64)


def fit_profile(hm_dir: str | Path) -> LogProfile:
    """Measure an H&M-shaped sample (transactions, articles, customers parquet files).

    Args:
        hm_dir: folder with ``transactions.parquet``, ``articles.parquet`` and ``customers.parquet``.

    Returns:
        The profile :func:`generate` samples from, with the sample's statistics in ``stats``.

    Raises:
        ValueError: a purchased article is missing from the catalogue, or over 2M articles were bought.
    """
    hm_dir = Path(hm_dir)
    t = pl.read_parquet(hm_dir / TRANSACTIONS)
    articles = pl.read_parquet(hm_dir / ARTICLES)
    customers = pl.read_parquet(hm_dir / CUSTOMERS)
    start, end = t["t_dat"].min(), t["t_dat"].max()
    assert isinstance(start, dt.date) and isinstance(end, dt.date)
    n_days = (end - start).days + 1

    catalogue = articles.select("article_id", "product_code", "product_type_no").with_row_index("cat_row")
    sold = t.select("article_id").unique().join(catalogue, on="article_id", how="left")
    if sold["cat_row"].null_count():
        raise ValueError(f"{sold['cat_row'].null_count()} purchased articles are not in {ARTICLES}")
    if sold.height >= 1 << 21:  # rows are hashed by (basket, article index) with 21 bits for the index
        raise ValueError(f"{sold.height:,} purchased articles: at most 2,097,151 are supported")
    # Sold articles ordered by product, so each product's articles are one contiguous range.
    sold = sold.sort("product_code", "article_id").with_row_index("s")
    product_codes, first = np.unique(sold["product_code"].to_numpy(), return_index=True)
    product_start = np.append(first, sold.height).astype(np.int64)
    article_product = np.repeat(np.arange(len(product_codes), dtype=np.int32), np.diff(product_start))

    rows = (
        t.with_columns((pl.col("t_dat") - pl.lit(start)).dt.total_days().cast(pl.Int32).alias("d"))
        .join(sold.select("article_id", "s"), on="article_id", how="left")
        .sort("d", "customer_id", maintain_order=True)
    )
    d, s = rows["d"].to_numpy(), rows["s"].to_numpy().astype(np.int32)
    new_basket = np.ones(rows.height, dtype=bool)
    new_basket[1:] = (d[1:] != d[:-1]) | (rows["customer_id"][1:] != rows["customer_id"][:-1]).to_numpy()
    basket_start = np.append(np.flatnonzero(new_basket), rows.height).astype(np.int64)
    basket_day = d[basket_start[:-1]]
    day_basket_start = np.searchsorted(basket_day, np.arange(n_days + 1)).astype(np.int64)

    sibling_start, sibling_rows, unsold_start, unsold_rows = _unsold_structure(catalogue, sold, product_codes)
    product_rows = np.bincount(article_product[s], minlength=len(product_codes)).astype(np.int64)
    types = sold.group_by("product_code").agg(pl.col("product_type_no").first()).sort("product_code")

    daily = _product_day_counts(pl.DataFrame({"p": article_product[s], "d": d}).group_by("p", "d").len(), n_days)
    per_customer_days = rows.group_by("customer_id").agg(pl.col("d").n_unique())["d"].to_numpy()
    active = t["customer_id"].unique()
    with_attributes = int(customers["customer_id"].is_in(active.implode()).sum())
    n_customers = active.len()
    profile = LogProfile(
        end_date=end,
        n_days=n_days,
        n_rows=t.height,
        n_customers=n_customers,
        articles=articles,
        customers=customers,
        transaction_schema=dict(t.schema),
        day_basket_start=day_basket_start,
        basket_start=basket_start,
        row_article=s,
        row_price=rows["price"].to_numpy().astype(np.float32),
        row_channel=rows["sales_channel_id"].to_numpy(),
        sold_catalogue_row=sold["cat_row"].to_numpy().astype(np.int64),
        article_product=article_product,
        product_start=product_start,
        product_type=types["product_type_no"].to_numpy(),
        product_rows=product_rows,
        product_daily=daily,
        sibling_start=sibling_start,
        sibling_rows=sibling_rows,
        unsold_start=unsold_start,
        unsold_rows=unsold_rows,
        days_shape=fit_days_shape(np.bincount(per_customer_days, minlength=n_days + 1)[1:]),
        cross_repeat=_cross_repeat_rate(rows, basket_start),
        drift_sigma=drift_sigma(daily),
        drift_persistence=fit_persistence(daily),
        launch_rate=_launch_rate(daily),
        attribute_share=with_attributes / n_customers,
        extra_customer_ratio=(customers.height - with_attributes) / n_customers,
        stats={},
    )
    profile.stats = measure_log(hm_dir)
    return profile


def _unsold_structure(
    catalogue: pl.DataFrame, sold: pl.DataFrame, product_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR of never-sold catalogue rows: per sold product (siblings), and per never-sold product."""
    unsold = catalogue.filter(~pl.col("article_id").is_in(sold["article_id"].implode())).sort("product_code", "cat_row")
    codes = unsold["product_code"].to_numpy()
    cat_rows = unsold["cat_row"].to_numpy().astype(np.int64)
    is_sibling = np.isin(codes, product_codes)
    sibling_product = np.searchsorted(product_codes, codes[is_sibling])
    sibling_start = np.searchsorted(sibling_product, np.arange(len(product_codes) + 1)).astype(np.int64)
    other_codes = codes[~is_sibling]
    first = np.flatnonzero(np.r_[True, other_codes[1:] != other_codes[:-1]]) if len(other_codes) else np.zeros(0, np.int64)
    unsold_start = np.append(first, len(other_codes)).astype(np.int64)
    return sibling_start, cat_rows[is_sibling], unsold_start, cat_rows[~is_sibling]


def _product_day_counts(counts: pl.DataFrame, n_days: int) -> np.ndarray:
    """(products, days) purchase counts from a frame of product ``p``, day ``d`` and count ``len``."""
    p = counts["p"].to_numpy()
    _, p = np.unique(p, return_inverse=True)
    matrix = np.zeros((int(p.max()) + 1 if len(p) else 0, n_days), dtype=np.float64)
    matrix[p, counts["d"].to_numpy()] = counts["len"].to_numpy()
    return matrix


def change_variance(daily: np.ndarray, lag: int = 1, min_count: int = DRIFT_MIN_COUNT) -> float:
    """Variance of the change of log-popularity over ``lag`` days, less the Poisson noise.

    Only products with ``min_count`` purchases on both days count (the noise correction assumes
    counts well above zero); the common day effect (weekday volume) is removed by centring.

    Args:
        daily: (products, days) purchase counts.
        lag: days between the two counts.
        min_count: the least count on both days for a product to enter a day pair.

    Returns:
        The variance (may be slightly negative from noise; 0 when no day pair has 10 products).
    """
    variances, weights = [], []
    for day in range(daily.shape[1] - lag):
        x, y = daily[:, day], daily[:, day + lag]
        keep = (x >= min_count) & (y >= min_count)
        if keep.sum() < 10:
            continue
        change = np.log(y[keep]) - np.log(x[keep])
        variances.append(change.var() - np.mean(1 / x[keep] + 1 / y[keep]))
        weights.append(keep.sum())
    return float(np.average(variances, weights=weights)) if weights else 0.0


def drift_sigma(daily: np.ndarray) -> float:
    """Daily drift of log-popularity: the noise-corrected standard deviation of day-to-day changes.

    Args:
        daily: (products, days) purchase counts.

    Returns:
        The standard deviation (0 if unmeasurable).
    """
    return math.sqrt(max(0.0, change_variance(daily)))


def fit_persistence(daily: np.ndarray) -> float:
    """Day-to-day correlation rho of log-popularity, fitted to the changes over 1..6 days.

    Popularity that follows a mean-reverting walk (Ornstein-Uhlenbeck: ``w' = rho w + noise``, spread
    V) changes by ``2 V (1 - rho^lag)`` over ``lag`` days: rho = 1 is a random walk (changes keep
    growing), rho = 0 fresh noise every day. H&M's saturate after a few days (rho ~ 0.6).

    Args:
        daily: (products, days) purchase counts.

    Returns:
        rho in [0, 0.95] (0.5 when the window is too short to tell).
    """
    lags = np.arange(1, min(daily.shape[1], 7))
    observed = np.array([change_variance(daily, int(lag)) for lag in lags])
    if len(lags) < 2 or observed[0] <= 0:
        return 0.5
    best, best_error = 0.5, math.inf
    for rho in np.linspace(0.0, 0.95, 96):
        shape = 2 * (1 - rho**lags)
        spread = float(shape @ observed / (shape @ shape))  # least-squares V for this rho
        error = float(((spread * shape - observed) ** 2).sum())
        if error < best_error:
            best, best_error = float(rho), error
    return best


def _launch_rate(daily: np.ndarray) -> float:
    """Share of popular products per day whose first sale comes after the first two days of the window."""
    if daily.shape[1] < 3:
        return 0.0
    popular = daily.sum(axis=1) >= LAUNCH_MIN_COUNT
    if not popular.any():
        return 0.0
    # Day 1 is excluded too: a product with a slow first day can miss it by chance.
    first_sale = (daily[popular] > 0).argmax(axis=1)
    return float((first_sale >= 2).mean() / (daily.shape[1] - 2))


def _cross_repeat_rate(rows: pl.DataFrame, basket_start: np.ndarray) -> float:
    """Share of the distinct articles of a customer's later baskets that the customer bought on an earlier day."""
    basket = np.repeat(np.arange(len(basket_start) - 1), np.diff(basket_start))
    frame = rows.select("customer_id", "s", "d").with_columns(pl.Series("b", basket))
    groups = frame.unique(["b", "s"]).with_columns(
        pl.col("d").min().over("customer_id", "s").alias("first_day"),
        pl.col("d").min().over("customer_id").alias("customer_first_day"),
    )
    later = groups.filter(pl.col("d") > pl.col("customer_first_day"))
    return float((later["first_day"] < later["d"]).mean()) if later.height else 0.0  # type: ignore[operator]


def active_days_pmf(shape: float, mean: float, days: int) -> np.ndarray:
    """P(n active days), n = 1..days: a negative binomial of ``shape`` cut to 1..days with mean ``mean``.

    The weights are ``Gamma(n + shape) / (Gamma(shape) n!) q^n``; on a finite range q may exceed 1
    (the untruncated distribution would not exist), which is what lets a heavy-tailed shape like
    H&M's (a log-series) reach means near ``days`` when few customers share many baskets.

    Args:
        shape: the negative-binomial shape (small = heavy tail, large = Poisson-like).
        mean: the wanted mean, in [1, days].
        days: the window length.

    Returns:
        The probabilities of 1..days active days.
    """
    n = np.arange(1, days + 1, dtype=np.float64)
    base = gammaln(n + shape) - gammaln(shape) - gammaln(n + 1)

    def pmf(log_q: float) -> np.ndarray:
        logp = base + n * log_q
        p = np.exp(logp - logp.max())
        return p / p.sum()

    lo, hi = -40.0, 40.0
    for _ in range(100):  # bisection on log q: the mean grows with q from 1 to ``days``
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(pmf(mid) @ n) < mean else (lo, mid)
    return pmf((lo + hi) / 2)


def fit_days_shape(histogram: np.ndarray) -> float:
    """Maximum-likelihood negative-binomial shape of active days per customer (zero-truncated, capped).

    Args:
        histogram: customers active on 1, 2, ... n_days days.

    Returns:
        The shape (large = Poisson-like, small = heavy-tailed); the mean is matched exactly.
    """
    days = len(histogram)
    n = np.arange(1, days + 1)
    mean = float(histogram @ n / histogram.sum())
    if mean <= 1.0 + 1e-9:
        return 100.0
    best, best_ll = 1.0, -math.inf
    for shape in np.geomspace(0.02, 1000, 61):
        pmf = active_days_pmf(shape, mean, days)
        ll = float(histogram @ np.log(np.maximum(pmf, 1e-300)))
        if ll > best_ll:
            best, best_ll = float(shape), ll
    return best


# --------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Plan:
    """The sizes of one synthetic log."""

    scale: float
    days: int
    seed: int
    rows: int
    baskets: int
    customers: int
    items: int
    catalogue: int
    end_date: str


def plan_sizes(
    profile: LogProfile,
    scale: float,
    days: int | None = None,
    seed: int = 0,
    items: int | None = None,
    customers: int | None = None,
    catalogue: int | None = None,
) -> Plan:
    """Sizes of a log ``scale`` times the profile's (see the module docstring for the growth laws).

    Args:
        profile: the measured sample.
        scale: purchases relative to the sample (10 -> 10x the rows).
        days: window length (default: the sample's); the rows are spread over it.
        seed: random seed (recorded).
        items: sold-article universe (default: grows as scale^items_exponent).
        customers: active customers (default: scale^0.62 above 1x, proportional below).
        catalogue: catalogue rows incl. never-sold articles (default: the sample's ratio, at most 1M).

    Returns:
        The plan.

    Raises:
        ValueError: sizes that cannot make a log (customers would need more days than the window).
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    days = profile.n_days if days is None else days
    rows = max(1, round(profile.n_rows * scale))
    baskets = max(1, round(rows / expected_basket_rows(profile, days, aligned_share(scale, days, profile.n_days))))
    if customers is None:
        customers = round(profile.n_customers * scale ** (CUSTOMER_EXPONENT if scale >= 1 else 1.0))
    customers = max(1, min(customers, baskets))  # every active customer has a basket
    if baskets / customers > days * 0.98:
        raise ValueError(
            f"{customers:,} customers would need {baskets / customers:.1f} of {days} days each: pass more --days or --customers"
        )
    if items is None:
        items = round(profile.n_sold * scale**profile.items_exponent)
    items = max(1, items)
    if catalogue is None:
        ratio = profile.articles.height / profile.n_sold
        catalogue = min(round(items * ratio), max(items, DEFAULT_MAX_CATALOGUE))
    if catalogue < items:
        raise ValueError(f"catalogue ({catalogue:,}) must hold the {items:,} sold articles")
    if catalogue > 9_000_000:
        raise ValueError("at most 9M catalogue rows (10-digit ids hold 7-digit product codes)")
    return Plan(scale, days, seed, rows, baskets, customers, items, catalogue, profile.end_date.isoformat())


# --------------------------------------------------------------------------------------------- catalogue


@dataclass
class Catalogue:
    """Product copies: which real product each copy clones, and where its sold articles are numbered."""

    copy_parent: np.ndarray  # real sold product of each copy, copies ordered by parent
    copy_base: np.ndarray  # (n_copies + 1,) first synthetic sold article of each copy
    copy_arrival: np.ndarray  # first day a copy can sell
    group_of_product: np.ndarray  # the real product whose copies serve each real product's rows
    group_copy_start: np.ndarray  # (n_products + 1,) copies of each real product (empty if uncovered)
    sold_ids: pl.Series  # article_id of each synthetic sold article
    articles: pl.DataFrame  # the catalogue to write


def build_catalogue(profile: LogProfile, plan: Plan, rng: np.random.Generator) -> Catalogue:
    """Copy real products until ``plan.items`` sold articles, add never-sold rows up to ``plan.catalogue``.

    Args:
        profile: the measured sample.
        plan: the sizes.
        rng: the catalogue's random stream.

    Returns:
        The copies and the catalogue frame (H&M schema, new ``article_id`` / ``product_code``).
    """
    n_products = len(profile.product_start) - 1
    sizes = np.diff(profile.product_start)
    if plan.items >= profile.n_sold:
        # Every real product once (every real basket can be mapped), then further whole rounds over
        # all products: each product gets floor or ceil(items / sold) copies, so splitting a product's
        # purchases over its copies adds as little spread as possible to the popularity curve.
        rounds = -(-plan.items // profile.n_sold) + 1
        order = np.concatenate([np.arange(n_products)] + [rng.permutation(n_products) for _ in range(rounds)])
        order = order[: int(np.searchsorted(np.cumsum(sizes[order]), plan.items)) + 1]
    else:
        # A smaller shop keeps the products a sample of its size would show: drawn by popularity
        # (weighted sampling without replacement: the smallest Exp(1)/weight keys).
        order = np.argsort(rng.exponential(size=n_products) / profile.product_rows)
        order = order[: int(np.searchsorted(np.cumsum(sizes[order]), plan.items)) + 1]
    copy_parent = np.sort(order, kind="stable").astype(np.int64)
    copy_base = np.concatenate([[0], np.cumsum(sizes[copy_parent])]).astype(np.int64)
    n_copies = len(copy_parent)

    covered = np.bincount(copy_parent, minlength=n_products) > 0
    group = np.where(covered, np.arange(n_products), _proxies(profile, covered, rng))
    group_copy_start = np.searchsorted(copy_parent, np.arange(n_products + 1)).astype(np.int64)
    # The first copy of a product sells from day 0 (its rows always have a home); later copies launch
    # mid-window at the measured per-day rate.
    original = np.r_[True, copy_parent[1:] != copy_parent[:-1]]
    launch = (~original) & (rng.random(n_copies) < min(1.0, profile.launch_rate * max(plan.days - 1, 0)))
    arrival = np.where(launch, rng.integers(1, max(plan.days, 2), size=n_copies), 0).astype(np.int32)

    # Catalogue rows: each copy's sold articles, then its never-sold siblings, then never-sold products.
    sold_rows = profile.sold_catalogue_row[_ranges(profile.product_start[copy_parent], sizes[copy_parent])]
    sib_len = np.diff(profile.sibling_start)[copy_parent]
    sib_rows = profile.sibling_rows[_ranges(profile.sibling_start[copy_parent], sib_len)]
    sib_copy = np.repeat(np.arange(n_copies), sib_len)
    room = max(0, plan.catalogue - len(sold_rows))
    if len(sib_rows) > room:
        keep = np.sort(rng.choice(len(sib_rows), size=room, replace=False))
        sib_rows, sib_copy = sib_rows[keep], sib_copy[keep]
    fill_rows, fill_product = _fill_unsold(profile, room - len(sib_rows), rng)

    n_new_products = n_copies + (int(fill_product.max()) + 1 if len(fill_product) else 0)
    codes = _product_codes(n_new_products, rng)
    product_of_row = np.concatenate(
        [np.repeat(np.arange(n_copies), sizes[copy_parent]), sib_copy, n_copies + fill_product]
    )
    rows = np.concatenate([sold_rows, sib_rows, fill_rows])
    articles = _copy_articles(profile.articles, rows, codes[product_of_row])
    sold_ids = articles["article_id"].head(len(sold_rows))
    return Catalogue(
        copy_parent, copy_base, arrival, group, group_copy_start, sold_ids, articles.sort("article_id")
    )


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for every pair, vectorised."""
    total = int(lengths.sum())
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def _draw_until(lengths: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform draws of indices into ``lengths`` until their lengths add up to at least ``count``."""
    if count <= 0:
        return np.zeros(0, np.int64)
    picks = rng.integers(0, len(lengths), size=int(count / lengths.mean() * 1.2) + 16)
    while lengths[picks].sum() < count:
        picks = np.concatenate([picks, rng.integers(0, len(lengths), size=len(picks))])
    return picks[: int(np.searchsorted(np.cumsum(lengths[picks]), count)) + 1]


def _proxies(profile: LogProfile, covered: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each real product, a covered product of the same type (drawn by popularity) to take its rows."""
    proxy = np.arange(len(covered))
    pool = np.flatnonzero(covered)
    weights = profile.product_rows[pool].astype(np.float64)
    for kind in np.unique(profile.product_type[~covered]):
        need = np.flatnonzero(~covered & (profile.product_type == kind))
        same = profile.product_type[pool] == kind
        candidates, w = (pool[same], weights[same]) if same.any() else (pool, weights)
        proxy[need] = rng.choice(candidates, size=len(need), p=w / w.sum())
    return proxy


def _fill_unsold(profile: LogProfile, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` catalogue rows of never-sold products (copied whole, the last one cut)."""
    n_unsold = len(profile.unsold_start) - 1
    if count <= 0 or n_unsold == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    picks = _draw_until(np.diff(profile.unsold_start), count, rng)
    lengths = np.diff(profile.unsold_start)[picks]
    rows = profile.unsold_rows[_ranges(profile.unsold_start[picks], lengths)][:count]
    product = np.repeat(np.arange(len(picks)), lengths)[:count]
    return rows, product


def _product_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct random product codes: 6 digits like H&M's while they last, else 7."""
    low, high = (100_000, 1_000_000) if n <= 800_000 else (1_000_000, 10_000_000)
    return low + rng.choice(high - low, size=n, replace=False).astype(np.int64)


def _copy_articles(articles: pl.DataFrame, rows: np.ndarray, codes: np.ndarray) -> pl.DataFrame:
    """Real article rows with new product codes; article_id = 7-digit code + the real 3-digit variant."""
    copied = articles[rows]
    variant = copied["article_id"].str.slice(-3).cast(pl.Int64).to_numpy()
    new_id = pl.Series(codes * 1000 + variant).cast(pl.String).str.zfill(10)
    return copied.with_columns(
        new_id.alias("article_id"), pl.Series(codes).cast(articles.schema["product_code"]).alias("product_code")
    )


# --------------------------------------------------------------------------------------------- customers


def _hex_ids(n: int, rng: np.random.Generator) -> pl.Series:
    """``n`` distinct-with-overwhelming-probability 64-hex-digit ids (like H&M's hashed customer ids), sorted."""
    raw = rng.bytes(32 * n)
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(raw)])
    series = pl.Series(pl.from_arrow(array)).cast(pl.Binary).bin.encode("hex")
    return series.sort()


def assign_baskets(profile: LogProfile, plan: Plan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which customer shops on which day: active-day counts per customer, on distinct days.

    Args:
        profile: the measured sample (days-per-customer shape, weekday volume).
        plan: the sizes.
        rng: the customers' random stream.

    Returns:
        ``day_start`` (days + 1 offsets) and the customer index of every basket, by day then customer.
    """
    pmf = active_days_pmf(profile.days_shape, plan.baskets / plan.customers, plan.days)
    active_days = rng.choice(np.arange(1, plan.days + 1), size=plan.customers, p=pmf).astype(np.int64)
    weights = profile.day_weights[real_day(np.arange(plan.days), plan.days, profile.n_days)]
    customers, days = [], []
    block = max(1, 4_000_000 // plan.days)  # keys for ~4M customer-days at a time
    for lo in range(0, plan.customers, block):
        hi = min(plan.customers, lo + block)
        # Weighted sampling of distinct days without replacement: the smallest Exp(1)/weight keys win.
        keys = rng.exponential(size=(hi - lo, plan.days)) / weights
        order = np.argsort(keys, axis=1)
        take = np.arange(plan.days) < active_days[lo:hi, None]
        days.append(order[take].astype(np.int16))
        customers.append(np.repeat(np.arange(lo, hi, dtype=np.int32), active_days[lo:hi]))
    customer, day = np.concatenate(customers), np.concatenate(days)
    order = np.lexsort((customer, day))
    day_start = np.searchsorted(day[order], np.arange(plan.days + 1)).astype(np.int64)
    return day_start, customer[order]


def real_day(day: np.ndarray, days: int, real_days: int) -> np.ndarray:
    """The real day a synthetic day copies: windows end on the same (week)day, longer ones cycle the week.

    Args:
        day: synthetic day indices (0 = first day of the window).
        days: the synthetic window length.
        real_days: the real window length.

    Returns:
        Real day indices.
    """
    return (day - (days - real_days)) % real_days


def _customers_frame(
    profile: LogProfile, ids: pl.Series, active: np.ndarray, rng: np.random.Generator
) -> pl.DataFrame:
    """customers.parquet: real attribute rows on the measured share of active customers and on inactive ones."""
    inactive = np.setdiff1d(np.arange(len(ids)), active, assume_unique=True)
    n_with = min(len(active), round(profile.attribute_share * len(active)))
    chosen = np.sort(np.concatenate([rng.choice(active, size=n_with, replace=False), inactive]))
    source = rng.integers(0, profile.customers.height, size=len(chosen))
    frame = profile.customers[source].with_columns(ids.gather(chosen).alias("customer_id"))
    return frame.select(profile.customers.columns)


# --------------------------------------------------------------------------------------------- rows


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a keyed hash, so every row of one (basket, product) draws the same number."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(basket: np.ndarray, key: np.ndarray, salt: int) -> np.ndarray:
    """A uniform in (0, 1) per (basket, key, salt), identical for equal triples."""
    combined = (basket.astype(np.uint64) << np.uint64(21)) ^ key.astype(np.uint64)
    bits = _mix(combined ^ _mix(np.full(1, salt, dtype=np.uint64)))
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * _MASK53


class _Popularity:
    """Each copy's daily weight within its product: a mean-reverting walk of log-popularity
    (stationary spread ``spread``, day-to-day correlation ``rho``), zero before launch."""

    def __init__(self, catalogue: Catalogue, spread: float, rho: float, rng: np.random.Generator) -> None:
        self.catalogue = catalogue
        self.spread = spread
        self.rho = rho
        self.rng = rng
        self.walk = np.zeros(len(catalogue.copy_parent))
        self.cumulative = np.zeros(0)

    def advance(self, day: int) -> None:
        """Move to ``day`` (called for days 0, 1, 2, ... in order) and rebuild the per-product CDF."""
        c = self.catalogue
        noise = self.rng.standard_normal(len(self.walk))
        if day == 0:  # start in the stationary state, so the spread does not grow over the window
            self.walk = self.spread * noise
        else:
            self.walk = self.rho * self.walk + self.spread * math.sqrt(1 - self.rho**2) * noise
        weight = np.exp(self.walk - self.walk.max()) * (c.copy_arrival <= day)
        cum = np.cumsum(weight)
        start, end = c.group_copy_start[c.copy_parent], c.group_copy_start[c.copy_parent + 1]
        before = np.where(start > 0, cum[start - 1], 0.0)
        within = (cum - before) / (cum[end - 1] - before)
        within[end - 1 == np.arange(len(within))] = 1.0  # the last copy closes the interval exactly
        # Product p's copies cover (p, p + 1]: one searchsorted over all products picks a copy.
        self.cumulative = c.copy_parent + within

    def pick(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The copy of real product ``group`` that a uniform ``u`` selects under today's weights."""
        return np.searchsorted(self.cumulative, group + u, side="left")


@dataclass
class _History:
    """The last RECENT_ITEMS articles (and what they cost) of every customer: a ring buffer for repeats."""

    items: np.ndarray
    prices: np.ndarray
    pointer: np.ndarray
    filled: np.ndarray

    @classmethod
    def empty(cls, customers: int) -> _History:
        return cls(
            np.full((customers, RECENT_ITEMS), -1, dtype=np.int32),
            np.zeros((customers, RECENT_ITEMS), dtype=np.float32),
            np.zeros(customers, dtype=np.int8),
            np.zeros(customers, dtype=np.int8),
        )


def _rows(
    profile: LogProfile,
    catalogue: Catalogue,
    popularity: _Popularity,
    history: _History,
    customer: np.ndarray,
    template: np.ndarray,
    first_basket: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of baskets: ``customer[i]`` buys a copy of real basket ``template[i]``.

    Returns:
        Per row: customer index, synthetic sold-article index, price, channel.
    """
    sizes = profile.basket_start[template + 1] - profile.basket_start[template]
    real_row = _ranges(profile.basket_start[template], sizes)
    within = real_row - np.repeat(profile.basket_start[template], sizes)
    local = np.repeat(np.arange(len(template)), sizes)
    basket = first_basket + local
    article = profile.row_article[real_row].astype(np.int64)
    product = profile.article_product[article].astype(np.int64)
    group = catalogue.group_of_product[product]
    # One copy per (basket, real product): both colours of a product bought together stay together.
    copy = popularity.pick(group, _uniform(basket, product, 4 * seed + 1))
    group_size = profile.product_start[group + 1] - profile.product_start[group]
    sold = catalogue.copy_base[copy] + (article - profile.product_start[product]) % group_size

    # Below 1x several real products share a proxy: keep "two different articles" from becoming "2 of one".
    clash = _clashes(basket, article, sold, np.zeros(len(sold), dtype=bool))
    sold[clash] = (_uniform(basket[clash], article[clash], 4 * seed + 4) * len(catalogue.sold_ids)).astype(np.int64)

    who = customer[local]
    filled = history.filled[who]
    repeat = (filled > 0) & (_uniform(basket, article, 4 * seed + 2) < profile.cross_repeat)
    slot = (_uniform(basket, article, 4 * seed + 3) * np.maximum(filled, 1)).astype(np.int64)
    mapped = sold.copy()
    sold[repeat] = history.items[who[repeat], slot[repeat]]
    # A re-buy of an article already in this basket is dropped (the row keeps its own article).
    dropped = repeat & _clashes(basket, article, sold, repeat)
    repeat &= ~dropped
    sold[dropped] = mapped[dropped]
    price = profile.row_price[real_row]
    # A re-bought article keeps its earlier price (a real row's price belongs to the real article).
    price[repeat] = history.prices[who[repeat], slot[repeat]]

    position = (history.pointer[who] + within) % RECENT_ITEMS
    history.items[who, position] = sold
    history.prices[who, position] = price
    history.pointer[customer] = (history.pointer[customer] + sizes) % RECENT_ITEMS
    history.filled[customer] = np.minimum(RECENT_ITEMS, history.filled[customer] + sizes)
    return who, sold, price, profile.row_channel[real_row]


def _clashes(basket: np.ndarray, article: np.ndarray, sold: np.ndarray, late: np.ndarray) -> np.ndarray:
    """Rows whose synthetic article another real article of the same basket already took.

    Within a basket, the rows of the first real article on a synthetic article keep it (a real
    "2 of one article" stays so); rows flagged ``late`` count as later than the others.
    """
    order = np.lexsort((article, late, sold, basket))
    b, s, a = basket[order], sold[order], article[order]
    run_start = np.r_[True, (b[1:] != b[:-1]) | (s[1:] != s[:-1])]
    first = np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))
    clash = np.zeros(len(order), dtype=bool)
    clash[order] = a != a[first]
    return clash


def _templates(profile: LogProfile, real: int, count: int, aligned: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` real baskets: a share ``aligned`` from real day ``real``, the rest from the whole window.

    Each source is drawn in whole shuffled rounds, so every real basket is used about equally often.
    """
    n_day = round(aligned * count)
    day = _rounds(int(profile.day_basket_start[real]), int(profile.day_basket_start[real + 1]), n_day, rng)
    pooled = _rounds(0, profile.n_baskets, count - n_day, rng)
    return rng.permutation(np.concatenate([day, pooled]))


def _rounds(lo: int, hi: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices from ``lo..hi-1``: shuffled full rounds, then part of one more."""
    if count <= 0:
        return np.zeros(0, np.int64)
    rounds = -(-count // (hi - lo))
    return np.concatenate([lo + rng.permutation(hi - lo) for _ in range(rounds)])[:count]


def aligned_share(scale: float, days: int, real_days: int) -> float:
    """Share of a day's baskets copied from the matching real day (the rest come from the whole window).

    While a synthetic day needs no more baskets than its real day has (1x over the real window, or
    more days), every basket comes from its real day, so the real day-to-day popularity changes are
    kept as they are. Copying a real day r times would turn its sampling noise (a product sold twice
    on Monday and never on Tuesday) into an r-fold trend, so then only 1/r of the baskets follow the
    real day and the copies' walk supplies the drift (:func:`calibrate_drift`).

    Args:
        scale: the log's scale.
        days: the log's window length.
        real_days: the sample's window length.

    Returns:
        The share in (0, 1].
    """
    return min(1.0, days / (scale * real_days))


def expected_basket_rows(profile: LogProfile, days: int, aligned: float) -> float:
    """Mean rows per synthetic basket: the real days' basket sizes, mixed as :func:`_templates` draws them.

    Args:
        profile: the measured sample.
        days: the log's window length.
        aligned: :func:`aligned_share` of the log.

    Returns:
        Rows per basket.
    """
    per_day = np.add.reduceat(np.diff(profile.basket_start), profile.day_basket_start[:-1]) / profile.day_weights
    real = real_day(np.arange(days), days, profile.n_days)
    weights = profile.day_weights[real]
    return float(weights @ (aligned * per_day[real] + (1 - aligned) * profile.mean_basket) / weights.sum())


def calibrate_drift(
    profile: LogProfile,
    catalogue: Catalogue,
    baskets_per_day: np.ndarray,
    aligned: float,
    repeat_share: float,
    seed: int,
) -> tuple[float, float]:
    """How a product's measured day-to-day drift is made to match the sample's.

    Replays the generator without customers or files: draws each day's real baskets as
    :func:`_templates` does, sends each (basket, product) to a copy as :func:`_rows` does, and
    measures :func:`drift_sigma` of the copies' daily counts, so basket clustering, template rounds,
    the 20-purchase selection and the noise correction all match the ``--check`` table. It bisects on
    the spread of the copies' walk; where a product has too few copies for the walk to reach the
    target (a little above 1x), it bisects instead on the share of baskets that follow their real
    day, walk off. Cross-day repeats are left out of the replay; they re-buy earlier popularity and
    damp the drift by about their share of rows, so the target is raised by it.

    Args:
        profile: the measured sample.
        catalogue: the copies.
        baskets_per_day: synthetic baskets on each day.
        aligned: :func:`aligned_share` of the log (the least share that copies no real day twice).
        repeat_share: expected share of rows that are cross-day repeats.
        seed: seed of the replay (its own streams: the generation's draws are unaffected).

    Returns:
        The share of baskets from their real day, and the spread of the copies' walk.
    """
    if aligned >= 1.0 or profile.drift_sigma <= 0:
        return 1.0, 0.0
    # (basket, product) groups of the real log with their rows: one copy is picked per group.
    basket = np.repeat(np.arange(profile.n_baskets), np.diff(profile.basket_start))
    product = profile.article_product[profile.row_article].astype(np.int64)
    keys, rows = np.unique(basket * (1 << 21) + product, return_counts=True)
    group_start = np.searchsorted(keys >> 21, np.arange(profile.n_baskets + 1))
    group_product = catalogue.group_of_product[keys & ((1 << 21) - 1)]
    days = min(len(baskets_per_day), 14)  # the drift is per day: two weeks measure it as well as a year
    # Large logs: a fixed random subset of the products (all their groups), about 1M groups a day,
    # measures the drift as well (thousands of products still pass the 20-purchase bar) in less memory.
    share = min(1.0, 1e6 / max(1.0, baskets_per_day.mean() * 2.5))
    keep = np.random.default_rng(seed).random(len(catalogue.group_copy_start)) < share

    def replay(aligned: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed + 2)
        instances = []
        for day in range(days):
            real = int(real_day(np.array([day]), len(baskets_per_day), profile.n_days)[0])
            template = _templates(profile, real, int(baskets_per_day[day]), aligned, rng)
            index = _ranges(group_start[template], group_start[template + 1] - group_start[template])
            index = index[keep[group_product[index]]]
            instances.append((group_product[index], rows[index].astype(np.float32), rng.random(len(index))))
        return instances

    def measured(instances: list[tuple[np.ndarray, np.ndarray, np.ndarray]], spread: float) -> float:
        popularity = _Popularity(catalogue, spread, profile.drift_persistence, np.random.default_rng(seed + 1))
        counts = np.zeros((len(catalogue.copy_parent), days))
        for day, (group, weight, u) in enumerate(instances):
            popularity.advance(day)
            counts[:, day] = np.bincount(popularity.pick(group, u), weight, len(catalogue.copy_parent))
        return drift_sigma(counts[counts.sum(axis=1) > 0])

    target = profile.drift_sigma / (1 - min(repeat_share, 0.5))
    instances = replay(aligned)
    most = 4 * profile.drift_sigma  # a wider spread would mostly reshape the popularity curve
    if measured(instances, most) >= target:
        lo, hi = 0.0, most
        for _ in range(10):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if measured(instances, mid) < target else (lo, mid)
        return aligned, (lo + hi) / 2
    lo, hi = aligned, 1.0
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if measured(replay(mid), 0.0) < target else (lo, mid)
    return (lo + hi) / 2, 0.0


# --------------------------------------------------------------------------------------------- generate


def generate(
    profile: LogProfile,
    scale: float,
    days: int | None = None,
    seed: int = 0,
    out_dir: str | Path = "artifacts/synthetic/hm",
    items: int | None = None,
    customers: int | None = None,
    catalogue: int | None = None,
    chunk_rows: int = 1_000_000,
) -> dict[str, Any]:
    """Write a synthetic H&M-shaped log (transactions, articles, customers parquet) to ``out_dir``.

    The folder is built beside ``out_dir`` and renamed into place (an existing one is replaced).

    Args:
        profile: from :func:`fit_profile`.
        scale: purchases relative to the profile's log.
        days: window length (default: the profile's); the window ends on the profile's last day.
        seed: random seed: the same seed and sizes give identical files.
        out_dir: the output folder.
        items: sold-article universe (see :func:`plan_sizes`).
        customers: active customers (see :func:`plan_sizes`).
        catalogue: catalogue rows (see :func:`plan_sizes`).
        chunk_rows: rows generated and written at a time (bounds memory).

    Returns:
        A summary: the plan, counts, timings and file sizes (also written to ``synthetic.json``).
    """
    plan = plan_sizes(profile, scale, days, seed, items, customers, catalogue)
    summary: dict[str, Any] = {"plan": asdict(plan)}

    def populate(folder: Path) -> None:
        folder.chmod(0o755)  # the temp folder is private (mkdtemp); the data set is not
        summary.update(_write_log(profile, plan, folder, chunk_rows))
        summary["files_mb"] = {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(folder.glob("*.parquet"))}
        (folder / "synthetic.json").write_text(json.dumps(summary, indent=2))

    write_dir(out_dir, populate)
    return summary


def _write_log(profile: LogProfile, plan: Plan, folder: Path, chunk_rows: int) -> dict[str, Any]:
    """Generate and write the three files; returns counts and timings."""
    started = time.perf_counter()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(plan.seed).spawn(6)]
    catalogue = build_catalogue(profile, plan, streams[0])
    catalogue.articles.write_parquet(folder / ARTICLES)
    log.info(
        "catalogue: %s rows, %s sold articles in %s product copies (%.1fs, peak %.0f MB)",
        f"{catalogue.articles.height:,}", f"{len(catalogue.sold_ids):,}", f"{len(catalogue.copy_parent):,}",
        time.perf_counter() - started, _peak_mb(),
    )
    day_start, basket_customer = assign_baskets(profile, plan, streams[1])
    n_extra = round(profile.extra_customer_ratio * plan.customers)
    ids = _hex_ids(plan.customers + n_extra, streams[2])
    # Active customers are a random subset of the sorted ids, so both files stay sorted by customer_id.
    active = np.sort(streams[2].choice(len(ids), size=plan.customers, replace=False))
    _customers_frame(profile, ids, active, streams[3]).write_parquet(folder / CUSTOMERS)
    active_ids = ids.gather(active)
    del ids
    log.info(
        "customers: %s active, %s baskets (%.2f per customer; %.1fs, peak %.0f MB)", f"{plan.customers:,}",
        f"{len(basket_customer):,}", len(basket_customer) / plan.customers, time.perf_counter() - started, _peak_mb(),
    )

    aligned = aligned_share(plan.scale, plan.days, profile.n_days)
    # Every basket after a customer's first re-buys at the measured rate (articles ~ rows here).
    repeat_share = profile.cross_repeat * (1 - plan.customers / len(basket_customer))
    aligned, spread = calibrate_drift(profile, catalogue, np.diff(day_start), aligned, repeat_share, plan.seed)
    log.info(
        "drift: %.0f%% of baskets from their real day; copies' log-popularity spread %.3f, day-to-day rho %.2f "
        "(%.1fs, peak %.0f MB)", 100 * aligned, spread, profile.drift_persistence, time.perf_counter() - started,
        _peak_mb(),
    )
    popularity = _Popularity(catalogue, spread, profile.drift_persistence, streams[4])
    history = _History.empty(plan.customers)
    bought = np.zeros(len(catalogue.sold_ids), dtype=np.int64)
    first_date = dt.date.fromisoformat(plan.end_date) - dt.timedelta(days=plan.days - 1)
    written = 0
    with pq.ParquetWriter(folder / TRANSACTIONS, _arrow_schema(profile), compression="zstd") as writer:
        for day in range(plan.days):
            popularity.advance(day)
            customers = basket_customer[day_start[day] : day_start[day + 1]]
            real = int(real_day(np.array([day]), plan.days, profile.n_days)[0])
            template = _templates(profile, real, len(customers), aligned, streams[5])
            sizes = np.diff(profile.basket_start)[template]
            # Parts of about chunk_rows rows; a customer's basket never straddles two parts.
            cuts = np.searchsorted(np.cumsum(sizes), np.arange(chunk_rows, sizes.sum(), chunk_rows))
            for part in np.split(np.arange(len(customers)), cuts):
                if not len(part):
                    continue
                who, sold, price, channel = _rows(
                    profile, catalogue, popularity, history, customers[part], template[part],
                    int(day_start[day] + part[0]), plan.seed,
                )
                bought += np.bincount(sold, minlength=len(bought))
                date = first_date + dt.timedelta(days=day)
                writer.write_table(_transactions_table(profile, date, active_ids, catalogue.sold_ids, who, sold, price, channel))
                written += len(who)
            elapsed = time.perf_counter() - started
            log.info(
                "day %d/%d %s: %s baskets, %s rows (total %s, %.0f rows/s, peak %.0f MB)",
                day + 1, plan.days, first_date + dt.timedelta(days=day), f"{len(customers):,}",
                f"{int(sizes.sum()):,}", f"{written:,}", written / elapsed, _peak_mb(),
            )
    seconds = time.perf_counter() - started
    return {
        "rows": written,
        "baskets": len(basket_customer),
        "customers_active": plan.customers,
        "customers_file_rows": pq.read_metadata(folder / CUSTOMERS).num_rows,
        "items_universe": len(catalogue.sold_ids),
        "items_bought": int((bought > 0).sum()),
        "catalogue_rows": catalogue.articles.height,
        "first_date": first_date.isoformat(),
        "last_date": plan.end_date,
        "seconds": round(seconds, 2),
        "rows_per_second": round(written / seconds),
        "peak_rss_mb": round(_peak_mb()),
    }


def _peak_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _arrow_schema(profile: LogProfile) -> pa.Schema:
    """The transactions file's arrow schema, taken from the real file's dtypes."""
    return pl.DataFrame(schema=profile.transaction_schema).to_arrow().schema


def _transactions_table(
    profile: LogProfile,
    date: dt.date,
    customer_ids: pl.Series,
    article_ids: pl.Series,
    who: np.ndarray,
    sold: np.ndarray,
    price: np.ndarray,
    channel: np.ndarray,
) -> pa.Table:
    """One part of transactions.parquet with the real file's column names and dtypes."""
    frame = pl.DataFrame(
        {
            "t_dat": pl.repeat(date, len(who), eager=True),
            "customer_id": customer_ids.gather(who),
            "article_id": article_ids.gather(sold),
            "price": price,
            "sales_channel_id": channel,
        }
    )
    return frame.cast(profile.transaction_schema).select(list(profile.transaction_schema)).to_arrow()  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- statistics


def measure_log(directory: str | Path) -> dict[str, float]:
    """The statistics :func:`generate` aims to reproduce, measured on an H&M-shaped folder.

    The transactions are scanned a few times with ids hashed to integers and reduced to small
    aggregates (baskets, article-days, id-pair keys), so 24M rows need well under 2 GB.

    Args:
        directory: folder with the three H&M-shaped parquet files.

    Returns:
        Statistic name -> value (names are the rows of the ``--check`` table).
    """
    directory = Path(directory)
    articles = pl.read_parquet(directory / ARTICLES)
    customers = pl.read_parquet(directory / CUSTOMERS, columns=["customer_id", "age"])
    scan = pl.scan_parquet(directory / TRANSACTIONS).select(
        pl.col("customer_id").hash().alias("c"),
        pl.col("article_id").cast(pl.Int64).alias("i"),
        pl.col("t_dat").cast(pl.Int32).alias("d"),  # days since 1970; made relative below
        pl.col("price"),
        pl.col("sales_channel_id").alias("ch"),
    )
    baskets = scan.group_by("c", "d").len().collect(engine="streaming")
    first_day = int(baskets["d"].min())  # type: ignore[arg-type]
    baskets = baskets.with_columns(pl.col("d") - first_day)
    article_days = (
        scan.group_by("d", "i").agg(pl.len(), pl.col("price").sum().alias("spent"))
        .with_columns(pl.col("d") - first_day).collect(engine="streaming")
    )
    totals = scan.select(
        pl.len().alias("rows"), (pl.col("ch") == 2).mean().alias("online"),
        pl.col("price").mean().alias("mean"), pl.col("price").median().alias("median"),
    ).collect(engine="streaming").row(0, named=True)
    # Distinct (customer, article) and (customer, day, article) keys give both kinds of repeat.
    pairs = _distinct(scan.select(pl.struct("c", "i").hash().alias("k")))
    triples = _distinct(scan.select(pl.struct("c", "d", "i").hash().alias("k")))
    rows = int(totals["rows"])
    stats: dict[str, float] = {"rows": float(rows)}
    stats.update(_customer_stats(baskets, customers))
    stats.update(
        {
            "repeat rate (pair bought before)": 1 - pairs / rows,
            "  same-basket duplicates": 1 - triples / rows,
            "  cross-day repeats": (triples - pairs) / rows,
            "online share (channel 2)": float(totals["online"]),
            "price, mean": float(totals["mean"]),
            "price, median": float(totals["median"]),
        }
    )
    stats.update(_item_stats(article_days, articles))
    return stats


def _distinct(keys: pl.LazyFrame) -> int:
    """Distinct values of the single u64 column of ``keys`` (sorted in numpy: ~16 bytes a row at peak)."""
    values = np.sort(keys.collect(engine="streaming").to_series().to_numpy())
    return int(1 + np.count_nonzero(values[1:] != values[:-1])) if len(values) else 0


def _customer_stats(baskets: pl.DataFrame, customers: pl.DataFrame) -> dict[str, float]:
    """Customers, baskets, daily volume and the customers file, from (customer, day) basket sizes."""
    per_customer = baskets.group_by("c").agg(pl.len().alias("days"), pl.col("len").sum().alias("rows"))
    bought = per_customer["rows"].to_numpy()
    sizes = baskets["len"].to_numpy()
    daily = baskets.group_by("d").agg(pl.col("len").sum())["len"].to_numpy()
    with_attributes = per_customer["c"].is_in(customers["customer_id"].hash().implode())
    return {
        "days": float(baskets["d"].max() + 1),  # type: ignore[operator]
        "customers (active)": float(per_customer.height),
        "purchases per day, min / mean": float(daily.min() / daily.mean()),
        "purchases per day, max / mean": float(daily.max() / daily.mean()),
        "purchases per customer, mean": float(bought.mean()),
        "purchases per customer, p50": float(np.percentile(bought, 50)),
        "purchases per customer, p90": float(np.percentile(bought, 90)),
        "purchases per customer, p99": float(np.percentile(bought, 99)),
        "customers active on 1 day": float((per_customer["days"] == 1).mean()),  # type: ignore[arg-type]
        "basket rows (customer-day), mean": float(sizes.mean()),
        "basket rows, p90": float(np.percentile(sizes, 90)),
        "baskets of 1 row": float((sizes == 1).mean()),
        "customers.parquet rows / active": customers.height / per_customer.height,
        "active customers with attributes": float(with_attributes.mean()),  # type: ignore[arg-type]
        "customer age, mean": float(customers["age"].mean()),  # type: ignore[arg-type]
    }


def _item_stats(article_days: pl.DataFrame, articles: pl.DataFrame) -> dict[str, float]:
    """Popularity, drift, prices per product type and the catalogue, from (day, article) counts."""
    catalogue = articles.select(
        pl.col("article_id").cast(pl.Int64).alias("i"), pl.col("product_code").alias("p"),
        pl.col("product_type_name").alias("type"),
    )
    counts = np.sort(article_days.group_by("i").agg(pl.col("len").sum())["len"].to_numpy())
    n_items = len(counts)
    top = counts[-max(1, n_items // 100):]
    lorenz = np.cumsum(counts) / counts.sum()
    joined = article_days.join(catalogue, on="i", how="left")
    days = int(article_days["d"].max()) + 1  # type: ignore[arg-type]
    daily = _product_day_counts(joined.group_by("p", "d").agg(pl.col("len").sum()), days)
    last = days - 1
    seen_before = article_days.filter(pl.col("d") < last)["i"].unique()
    last_items = article_days.filter(pl.col("d") == last)["i"]
    stats = {
        "articles bought": float(n_items),
        "purchases per article, mean": float(counts.mean()),
        "purchases per article, p50 / mean": float(np.percentile(counts, 50) / counts.mean()),
        "purchases per article, p99 / mean": float(np.percentile(counts, 99) / counts.mean()),
        "share of rows on top 1% articles": float(top.sum() / counts.sum()),
        "popularity Gini": float(1 - 2 * lorenz.mean() + 1 / n_items),
        "top-100 articles kept next day": _top_overlap(article_days, 100),
        "daily drift of log popularity (sigma)": drift_sigma(daily),
        "2-day / 1-day drift variance": change_variance(daily, 2) / max(change_variance(daily), 1e-12),
        "last day's articles not bought before": float((~last_items.is_in(seen_before.implode())).mean()),
        "catalogue rows": float(articles.height),
        "catalogue share bought": n_items / articles.height,
        "articles per product": articles.height / articles["product_code"].n_unique(),
        "product types in catalogue": float(articles["product_type_name"].n_unique()),
        "detail_desc missing": float(articles["detail_desc"].is_null().mean()),  # type: ignore[arg-type]
    }
    types = (
        joined.group_by("type").agg(pl.col("len").sum(), pl.col("spent").sum())
        .sort("len", descending=True).head(5)
    )
    for kind, n, spent in zip(types["type"], types["len"], types["spent"], strict=True):
        stats[f"price mean: {kind}"] = float(spent / n)
    return stats


def _top_overlap(by_day: pl.DataFrame, k: int) -> float:
    """Mean share of a day's top-k articles that are in the next day's top-k."""
    days = sorted(by_day["d"].unique().to_list())
    tops = {d: set(by_day.filter(pl.col("d") == d).sort("len", "i", descending=True).head(k)["i"].to_list()) for d in days}
    shares = [len(tops[a] & tops[b]) / k for a, b in itertools.pairwise(days)]
    return float(np.mean(shares)) if shares else 0.0


_SIZE = "size"
_PER_CUSTOMER = "baskets per customer (--customers, --days)"
_NOISE = "Poisson noise: falls as counts grow"
# Rows that differ from H&M by design at other scales; the others should match at any scale.
CHECK_NOTES = {
    "rows": _SIZE, "customers (active)": _SIZE, "articles bought": _SIZE, "catalogue rows": _SIZE,
    "purchases per article, mean": _SIZE,
    "purchases per day, min / mean": _PER_CUSTOMER, "purchases per day, max / mean": _PER_CUSTOMER,
    "purchases per customer, mean": _PER_CUSTOMER, "purchases per customer, p50": _PER_CUSTOMER,
    "purchases per customer, p90": _PER_CUSTOMER, "purchases per customer, p99": _PER_CUSTOMER,
    "customers active on 1 day": _PER_CUSTOMER, "repeat rate (pair bought before)": _PER_CUSTOMER,
    "  cross-day repeats": _PER_CUSTOMER,
    "top-100 articles kept next day": _NOISE, "last day's articles not bought before": _NOISE,
}


def check_table(real: dict[str, float], synthetic: dict[str, float]) -> str:
    """The real and synthetic statistics side by side (a Markdown table).

    Args:
        real: :func:`measure_log` of the sample.
        synthetic: :func:`measure_log` of the generated log.

    Returns:
        The table; the note column names rows that change with scale by design (see ``CHECK_NOTES``).
    """
    lines = ["| statistic | H&M sample | synthetic | synthetic / H&M | changes with |", "|---|---:|---:|---:|---|"]
    for name in list(real) + [n for n in synthetic if n not in real]:
        a, b = real.get(name), synthetic.get(name)
        ratio = f"{b / a:.3f}" if a and b is not None else ""
        lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | {ratio} | {CHECK_NOTES.get(name, '')} |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Command line: fit the profile, generate, optionally check.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, required=True, help="purchases relative to the H&M week (10 = 2.4M)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    parser.add_argument("--days", type=int, help="window length in days (default 7); the rows are spread over it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, help="sold articles (default 17,986 x scale^0.384; up to ~1M)")
    parser.add_argument("--customers", type=int, help="active customers (default 68,984 x scale^0.62 above 1x)")
    parser.add_argument("--catalogue", type=int, help="catalogue rows incl. never-sold (default: H&M's ratio, <= 1M)")
    parser.add_argument("--hm-dir", type=Path, default=DEFAULT_HM_DIR, help="the real H&M sample to fit")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows generated and written at a time")
    parser.add_argument("--check", action="store_true", help="measure the output and print it beside the sample")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    started = time.perf_counter()
    profile = fit_profile(args.hm_dir)
    log.info(
        "profile of %s: %s rows, %s baskets, days shape %.2f, cross-day repeat %.4f, drift %.3f/day "
        "(rho %.2f), launches %.4f/day (%.1fs)",
        args.hm_dir, f"{profile.n_rows:,}", f"{profile.n_baskets:,}", profile.days_shape, profile.cross_repeat,
        profile.drift_sigma, profile.drift_persistence, profile.launch_rate, time.perf_counter() - started,
    )
    summary = generate(
        profile, args.scale, args.days, args.seed, args.out, args.items, args.customers, args.catalogue, args.chunk_rows
    )
    print(json.dumps(summary, indent=2))
    if args.check:
        started = time.perf_counter()
        print(check_table(profile.stats, measure_log(args.out)))
        log.info("check measured in %.1fs", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
