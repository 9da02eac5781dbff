"""bench/synthetic_log.py: H&M-shaped synthetic logs (sizes, schema, ids, statistics, determinism, loader)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import PROJECT_ROOT, load_config
from recsys.data import load_dataset
from tests.conftest import HM_DIR

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import synthetic_log as sl

SMALL_ROWS = 4_806  # 0.02x of the H&M week (a tiny fallback profile is scaled up to about as many rows)
FILES = (sl.TRANSACTIONS, sl.ARTICLES, sl.CUSTOMERS)
ARTICLE_COLUMNS = [  # H&M's articles.parquet, in its order
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name", "product_group_name",
    "graphical_appearance_no", "graphical_appearance_name", "colour_group_code", "colour_group_name",
    "perceived_colour_value_id", "perceived_colour_value_name", "perceived_colour_master_id",
    "perceived_colour_master_name", "department_no", "department_name", "index_code", "index_name",
    "index_group_no", "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
]


def write_tiny_hm(root: Path, seed: int = 0) -> Path:
    """A small log in the H&M files' layout (all 25 article columns, 7 customer columns), for a hermetic profile."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    # Enough articles that a customer rarely re-buys one by chance (H&M has 18k bought in the week).
    products = np.repeat(np.arange(300), rng.integers(1, 4, size=300))
    variant = np.concatenate([np.arange(np.sum(products == p)) + 1 for p in range(300)])
    codes = 108_775 + 17 * products
    n = len(codes)
    text = {  # the H&M string columns, a few values each, so types and groups repeat
        name: [f"{name.removesuffix('_name')} {k % 5}" for k in products]
        for name in ("product_type_name", "product_group_name", "graphical_appearance_name", "colour_group_name",
                     "perceived_colour_value_name", "perceived_colour_master_name", "department_name", "index_name",
                     "index_group_name", "section_name", "garment_group_name")
    }
    numbers = {
        name: (products % 5 + 1).astype(np.int64)
        for name in ("product_type_no", "graphical_appearance_no", "colour_group_code", "perceived_colour_value_id",
                     "perceived_colour_master_id", "department_no", "index_group_no", "section_no", "garment_group_no")
    }
    articles = pl.DataFrame(
        {
            "article_id": [f"{c * 1000 + v:010d}" for c, v in zip(codes, variant, strict=True)],
            "product_code": codes.astype(np.int64),
            "prod_name": [f"item {p}" for p in products],
            **numbers, **text,
            "index_code": [chr(65 + p % 4) for p in products],
            "detail_desc": [None if p % 13 == 0 else f"a soft cotton piece number {p}" for p in products],
        }
    ).select(ARTICLE_COLUMNS)
    customers = [f"{k:064x}" for k in rng.integers(1, 2**62, size=400)]
    popularity = 1.0 / (np.arange(n) + 1) ** 0.6
    rows = []
    for day in range(7):
        for c in rng.choice(400, size=90, replace=False):
            items = rng.choice(n, size=int(rng.integers(1, 6)), p=popularity / popularity.sum())
            items = np.append(items, items[0]) if rng.random() < 0.15 else items  # "2 of one article"
            channel = int(rng.integers(1, 3))
            for j in items:
                rows.append((dt.date(2020, 9, 16) + dt.timedelta(days=day), customers[c], articles["article_id"][int(j)],
                             float(0.01 + 0.002 * (j % 7)), channel))
    schema = {"t_dat": pl.Date, "customer_id": pl.String, "article_id": pl.String, "price": pl.Float32,
              "sales_channel_id": pl.Int8}
    pl.DataFrame(rows, schema=schema, orient="row").sort("t_dat", "customer_id", maintain_order=True).write_parquet(
        root / sl.TRANSACTIONS
    )
    articles.write_parquet(root / sl.ARTICLES)
    pl.DataFrame(
        {
            "customer_id": customers[:150],
            "FN": [1.0 if k % 3 == 0 else None for k in range(150)],
            "Active": [1.0 if k % 4 == 0 else None for k in range(150)],
            "club_member_status": ["ACTIVE" if k % 9 else "PRE-CREATE" for k in range(150)],
            "fashion_news_frequency": ["NONE" if k % 2 else "Regularly" for k in range(150)],
            "age": [float(18 + k % 50) for k in range(150)],
            "postal_code": [f"{k % 30:064x}" for k in range(150)],
        }
    ).write_parquet(root / sl.CUSTOMERS)
    return root


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> sl.LogProfile:
    """The profile of the shared H&M sample, or of a tiny in-test log of the same layout when it is absent."""
    if (HM_DIR / sl.TRANSACTIONS).is_file():
        return sl.fit_profile(HM_DIR)
    return sl.fit_profile(write_tiny_hm(tmp_path_factory.mktemp("tiny_hm")))


@pytest.fixture(scope="module")
def scale(profile: sl.LogProfile) -> float:
    """The scale of the small test log: 0.02 of the H&M sample."""
    return SMALL_ROWS / profile.n_rows


@pytest.fixture(scope="module")
def small_log(profile: sl.LogProfile, scale: float, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A small log (seed 0) and its generation summary.

    Customers shrink with the rows (the default below 1x, set explicitly for a tiny fallback profile
    scaled up), so baskets per customer and hence the repeat rate are comparable with the sample's.
    """
    out = tmp_path_factory.mktemp("synthetic") / "hm_small"
    return out, sl.generate(profile, scale, seed=0, out_dir=out, customers=round(profile.n_customers * scale))


def test_rows_and_files_have_the_hm_layout(profile: sl.LogProfile, scale: float, small_log: tuple[Path, dict]) -> None:
    """Row count within 5% of scale x the sample; the three files keep the H&M column names and dtypes."""
    out, summary = small_log
    transactions = pl.read_parquet(out / sl.TRANSACTIONS)
    assert transactions.height == summary["rows"]
    assert abs(transactions.height / (profile.n_rows * scale) - 1) < 0.05
    assert transactions.schema == pl.Schema(profile.transaction_schema)
    assert pl.read_parquet_schema(out / sl.ARTICLES) == profile.articles.schema
    assert pl.read_parquet_schema(out / sl.CUSTOMERS) == profile.customers.schema
    days = transactions["t_dat"].unique().sort()
    assert days.len() == profile.n_days and days[-1] == profile.end_date


def test_ids_are_hm_shaped_and_consistent(small_log: tuple[Path, dict]) -> None:
    """Article ids are unique 10-digit zero-padded strings led by the product code; every bought article is in the catalogue."""
    out, _ = small_log
    articles = pl.read_parquet(out / sl.ARTICLES)
    transactions = pl.read_parquet(out / sl.TRANSACTIONS)
    customers = pl.read_parquet(out / sl.CUSTOMERS)
    assert articles["article_id"].str.contains(r"^\d{10}$").all()
    assert articles["article_id"].is_unique().all()
    assert (articles["article_id"].str.slice(0, 7).cast(pl.Int64) == articles["product_code"]).all()
    assert transactions["article_id"].is_in(articles["article_id"].implode()).all()
    assert transactions["customer_id"].str.contains(r"^[0-9a-f]{64}$").all()
    assert customers["customer_id"].is_unique().all()


def test_statistics_follow_the_profile(profile: sl.LogProfile, small_log: tuple[Path, dict]) -> None:
    """Basket size, repeat rate, channel share and mean price of a small log stay near the sample's."""
    out, _ = small_log
    real, synthetic = profile.stats, sl.measure_log(out)
    assert synthetic["basket rows (customer-day), mean"] == pytest.approx(real["basket rows (customer-day), mean"], rel=0.10)
    assert synthetic["repeat rate (pair bought before)"] == pytest.approx(real["repeat rate (pair bought before)"], rel=0.25)
    assert synthetic["online share (channel 2)"] == pytest.approx(real["online share (channel 2)"], abs=0.05)
    assert synthetic["price, mean"] == pytest.approx(real["price, mean"], rel=0.10)
    assert synthetic["active customers with attributes"] == pytest.approx(real["active customers with attributes"], abs=0.02)
    assert "| repeat rate (pair bought before) |" in sl.check_table(real, synthetic)


def test_same_seed_gives_identical_files(
    profile: sl.LogProfile, scale: float, small_log: tuple[Path, dict], tmp_path: Path
) -> None:
    """Generating again with the same seed writes identical files; another seed writes a different log."""
    out, _ = small_log
    again = tmp_path / "again"
    sl.generate(profile, scale, seed=0, out_dir=again, customers=round(profile.n_customers * scale))
    for name in FILES:
        assert pl.read_parquet(again / name).equals(pl.read_parquet(out / name)), name
    other = tmp_path / "other"
    sl.generate(profile, scale, seed=1, out_dir=other)
    assert not pl.read_parquet(other / sl.TRANSACTIONS).equals(pl.read_parquet(out / sl.TRANSACTIONS))


def test_output_folder_is_replaced_atomically(profile: sl.LogProfile, scale: float, tmp_path: Path) -> None:
    """An existing output folder is swapped for the new one as a whole, and no temp folder is left beside it."""
    out = tmp_path / "log"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    sl.generate(profile, scale, seed=0, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, "synthetic.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["log"]


def test_loader_reads_the_log_through_the_synthetic_config(small_log: tuple[Path, dict], tmp_path: Path) -> None:
    """configs/synthetic_hm.yaml pointed at the output loads it with the project's loader, without errors."""
    out, summary = small_log
    config = load_config(
        PROJECT_ROOT / "configs" / "synthetic_hm.yaml", overrides={"work_dir": str(tmp_path), "data": {"data_dir": str(out)}}
    )
    assert config.data.items.image_dir is None and config.content.backend == "standin"
    dataset = load_dataset(config.data)
    assert dataset.interactions.height == summary["rows"]
    assert dataset.items.height == summary["catalogue_rows"]
    assert dataset.users is not None and dataset.users.height == summary["customers_file_rows"]


def test_fit_and_generate_on_a_tiny_log(tmp_path: Path) -> None:
    """A profile fitted on a tiny H&M-layout log generates a 2x log with its schema and basket sizes."""
    source = write_tiny_hm(tmp_path / "tiny")
    profile = sl.fit_profile(source)
    assert profile.n_rows == pl.read_parquet(source / sl.TRANSACTIONS).height
    summary = sl.generate(profile, 2.0, seed=0, out_dir=tmp_path / "out")
    transactions = pl.read_parquet(tmp_path / "out" / sl.TRANSACTIONS)
    assert transactions.schema == pl.read_parquet_schema(source / sl.TRANSACTIONS)
    assert abs(summary["rows"] / (2 * profile.n_rows) - 1) < 0.05
    stats = sl.measure_log(tmp_path / "out")
    assert stats["basket rows (customer-day), mean"] == pytest.approx(profile.mean_basket, rel=0.10)


def test_plan_sizes_follow_the_growth_laws(profile: sl.LogProfile) -> None:
    """100x plans 100x the rows, customers ~ scale^0.62 and sold articles reaching the sample's catalogue size."""
    plan = sl.plan_sizes(profile, 100, days=28)  # 4 weeks: room for the customers of a tiny fallback profile too
    assert plan.rows == round(profile.n_rows * 100)
    assert plan.customers == round(profile.n_customers * 100**sl.CUSTOMER_EXPONENT)
    assert plan.items == pytest.approx(profile.articles.height, rel=0.01, abs=2)
    assert plan.items <= plan.catalogue <= max(plan.items, sl.DEFAULT_MAX_CATALOGUE)
    assert sl.plan_sizes(profile, 100, days=28, items=1_000_000).items == 1_000_000
    with pytest.raises(ValueError, match="more --days or --customers"):
        sl.plan_sizes(profile, 10, customers=10)


def test_active_days_reach_any_mean_in_the_window() -> None:
    """The days-per-customer distribution hits its mean even near the window length (heavy-tailed shape, q > 1)."""
    for mean, days in [(1.12, 7), (2.7, 7), (6.4, 7), (3.0, 56)]:
        pmf = sl.active_days_pmf(0.05, mean, days)
        assert pmf.sum() == pytest.approx(1.0)
        assert float(pmf @ np.arange(1, days + 1)) == pytest.approx(mean, rel=1e-4)
