"""Shared fixtures: a small synthetic shop written to disk, and the shared H&M data location."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from recsys.bundle import Bundle
from recsys.config import PROJECT_ROOT, ProjectConfig, load_config
from training.pipeline import Pipeline

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HM_DIR = Path(os.environ.get("RECSYS_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "hm"))


@pytest.fixture(scope="session")
def hm_dir() -> Path:
    """The shared H&M sample; integration tests need it (CI has ../shared beside the clone)."""
    if not (HM_DIR / "transactions.parquet").is_file():
        pytest.fail(f"H&M data not found at {HM_DIR}: set RECSYS_DATA_DIR")
    return HM_DIR


@pytest.fixture(scope="session")
def hm_config(hm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    """configs/hm.yaml pointed at the shared data and a temporary work dir."""
    work = tmp_path_factory.mktemp("hm_work")
    return load_config(PROJECT_ROOT / "configs" / "hm.yaml", overrides={"work_dir": str(work), "data": {"data_dir": str(hm_dir)}})


def make_shop(root: Path, n_users: int = 40, n_items: int = 30, days: int = 8, seed: int = 0, images: bool = True) -> Path:
    """Write a small synthetic shop (interactions.parquet, items.parquet, users.csv, images/) under ``root``.

    Users have taste clusters so collaborative models have something to learn; every third
    item has no photo. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    item_ids = [f"i{j:03d}" for j in range(n_items)]
    colours = ["red", "blue", "black"]
    types = ["dress", "shirt", "boots"]
    pl.DataFrame(
        {
            "item_id": item_ids,
            "name": [f"{colours[j % 3]} {types[(j // 3) % 3]} {j}" for j in range(n_items)],
            "product_type": [types[(j // 3) % 3] for j in range(n_items)],
            "colour": [colours[j % 3] for j in range(n_items)],
            "description": [f"a {colours[j % 3]} {types[(j // 3) % 3]} made of cotton" for j in range(n_items)],
        }
    ).write_parquet(root / "items.parquet")
    rows = []
    start = dt.date(2024, 1, 1)
    for u in range(n_users):
        cluster = u % 3
        favourites = [j for j in range(n_items) if j % 3 == cluster]
        for _ in range(int(rng.integers(3, 9))):
            j = int(rng.choice(favourites)) if rng.random() < 0.8 else int(rng.integers(n_items))
            day = start + dt.timedelta(days=int(rng.integers(days)))
            rows.append({"user": f"u{u:03d}", "item": item_ids[j], "date": day, "price": float(rng.uniform(5, 50))})
    pl.DataFrame(rows).sort("date").write_parquet(root / "interactions.parquet")
    pl.DataFrame({"user": [f"u{u:03d}" for u in range(n_users)], "age": [20 + u % 40 for u in range(n_users)]}).write_csv(root / "users.csv")
    if images:
        (root / "images").mkdir(exist_ok=True)
        for j, item_id in enumerate(item_ids):
            if j % 3 == 2:
                continue  # items without a photo are normal
            colour = [(200, 30, 30), (30, 30, 200), (20, 20, 20)][j % 3]
            Image.new("RGB", (32, 48), colour).save(root / "images" / f"{item_id}.jpg")
    return root


def shop_config(root: Path, work: Path, **overrides: object) -> ProjectConfig:
    """A ProjectConfig for :func:`make_shop` data (last day = test, day before = validation)."""
    raw = {
        "name": "shop",
        "work_dir": str(work),
        "data": {
            "data_dir": str(root),
            "interactions": {
                "path": "interactions.parquet",
                "columns": {"user_id": "user", "item_id": "item", "timestamp": "date", "price": "price"},
            },
            "items": {
                "path": "items.parquet",
                "columns": {"item_id": "item_id", "name": "name", "categorical": ["product_type", "colour"], "text": ["name", "description"]},
                "image_dir": "images",
                "image_template": "{item_id}.jpg",
            },
            "users": {"path": "users.csv", "user_id": "user", "numeric": ["age"]},
        },
        "split": {"mode": "global", "test": "1d", "validation": "1d", "warm_users_only": True},
        "evaluation": {"k": 5, "recall_ks": [5, 10], "bootstrap_samples": 200},
        "models": {"als": {"factors": 8, "iterations": 5}, "bpr": {"factors": 8, "iterations": 20}, "itemknn": {"neighbours": 10}},
    }
    from recsys.config import deep_merge

    return ProjectConfig.model_validate(deep_merge(raw, dict(overrides)))


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, ProjectConfig]:
    """(data root, config) of a fresh synthetic shop in a temp dir."""
    root = make_shop(tmp_path / "shop")
    return root, shop_config(root, tmp_path / "work")


_SMALL_BUNDLE_FAILURE: list[str] = []


@pytest.fixture(scope="session")
def small_bundle(hm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle from `recsys train --config configs/hm_small.yaml` (3% of H&M customers).

    Trained once per test session into a temp work dir (RECSYS_WORK_DIR stays set for the
    session so later runs reuse it); returns the bundle directory.
    """
    import subprocess
    import sys

    if _SMALL_BUNDLE_FAILURE:
        pytest.fail(_SMALL_BUNDLE_FAILURE[0])  # the session fixture already failed once: do not retrain
    # RECSYS_TEST_WORK_DIR reuses a warm work dir between local runs; CI trains from scratch.
    work = Path(os.environ.get("RECSYS_TEST_WORK_DIR") or tmp_path_factory.mktemp("small_work"))
    os.environ["RECSYS_WORK_DIR"] = str(work)
    os.environ["RECSYS_DATA_DIR"] = str(hm_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--config", "configs/hm_small.yaml"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        _SMALL_BUNDLE_FAILURE.append(f"recsys train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        pytest.fail(_SMALL_BUNDLE_FAILURE[0])
    from recsys.bundle import resolve_bundle

    return resolve_bundle(work / "bundles")


TWO_TOWER = {"id_dim": 8, "category_dim": 4, "hidden": [16], "output_dim": 8, "batch_size": 32, "max_epochs": 2, "validation_k": 10}


def shop_pipeline_config(root: Path, n_users: int = 60, n_items: int = 36, images: bool = True, **overrides: object) -> ProjectConfig:
    """The synthetic shop below ``root`` with settings small enough for a `recsys train` run in seconds
    (stand-in content encoder, tiny two-tower and ranker); ``overrides`` are deep-merged into the config."""
    from recsys.config import deep_merge

    data = make_shop(root / "shop", n_users=n_users, n_items=n_items, images=images)
    settings: dict[str, object] = {
        "content": {"backend": "standin", "standin_dim": 16},
        "retrieval": {"two_tower": TWO_TOWER, "candidates": {"size": 30, "per_source": 20}, "index": {"exact_max_items": 10}},
        "reranker": {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 1, "label_folds": 1, "early_stopping_rounds": 5,
                     "min_label_users": 3},
    }
    if not images:
        settings["data"] = {"items": {"image_dir": None}}
    return shop_config(data, root / "work", **deep_merge(settings, dict(overrides)))


def shop_bundle(root: Path) -> Bundle:
    """Train the whole pipeline on a fresh synthetic shop below ``root``; returns the bundle."""
    return Pipeline(shop_pipeline_config(root)).run().bundle


@pytest.fixture(scope="session")
def shop_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pipeline run on the synthetic shop per test session (~20 s); the bundle's folder."""
    return shop_bundle(tmp_path_factory.mktemp("shop_pipeline")).path


def write_standin_vectors(config: ProjectConfig, items: pl.DataFrame, dim: int = 8) -> Path:
    """Text-only stand-in content vectors at the config's ``content.vectors_path`` (what the content
    stage would write), so models fitted from the config read them as in a training run."""
    from features.content.standin import build_standin_vectors

    path = config.work_path / config.content.vectors_path
    return build_standin_vectors(items, list(config.data.items.columns.text), dim).save(path)
