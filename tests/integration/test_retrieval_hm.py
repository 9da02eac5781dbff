"""Retrieval on a slice of the real H&M data: content signal, ALS fold-in, two-tower and candidates.

The full-data numbers come from ``recsys retrieval`` / bench/retrieval_bench.py; here a sample of
users (all their purchases) and the items bought in the week keep the run to about a minute.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features.content.standin import build_standin_vectors
from recsys.config import ProjectConfig
from recsys.data import load_dataset
from recsys.data.dataset import Dataset
from recsys.evaluation.protocol import prepare_evaluation, score_lists
from recsys.models.als_factors import ALSFactors
from tests.conftest import write_standin_vectors
from training.retrieval import run_retrieval

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def sliced(hm_config: ProjectConfig) -> tuple[ProjectConfig, Dataset]:
    """3,000 users who bought in the last two days (and all their purchases); the items of the week."""
    ds = load_dataset(hm_config.data)
    late = ds.interactions.filter(pl.col("timestamp") >= pl.datetime(2020, 9, 21))
    users = late["user_id"].unique().sort().sample(3000, seed=0)
    inter = ds.interactions.filter(pl.col("user_id").is_in(users.implode()))
    items = ds.items.filter(pl.col("item_id").is_in(ds.interactions["item_id"].unique().implode()))
    sliced = Dataset(inter, items, ds.users, ds.images, ds.report, ds.fingerprint)
    config = hm_config.model_copy(
        update={
            "models": hm_config.models.model_copy(update={"als": hm_config.models.als.model_copy(update={"factors": 32, "iterations": 8})}),
            "retrieval": hm_config.retrieval.model_copy(
                update={
                    "two_tower": hm_config.retrieval.two_tower.model_copy(
                        update={"id_dim": 32, "hidden": [64], "output_dim": 32, "max_epochs": 2, "batch_size": 512}
                    ),
                    "candidates": hm_config.retrieval.candidates.model_copy(update={"size": 150}),
                }
            )
        }
    )
    write_standin_vectors(config, items, 32)
    return config, sliced


def test_standin_content_vectors_carry_product_type(sliced: tuple[ProjectConfig, Dataset]) -> None:
    config, ds = sliced
    items = ds.items.head(3000)
    vectors = build_standin_vectors(items, config.data.items.columns.text, 32)
    sims = vectors.fused @ vectors.fused.T
    np.fill_diagonal(sims, -1)
    nearest = sims.argmax(axis=1)
    kinds = items["product_type_name"].to_numpy()
    assert (kinds[nearest] == kinds).mean() > 0.6  # chance is well under 0.1 with 100+ product types


def test_als_fold_in_reproduces_trained_factors(sliced: tuple[ProjectConfig, Dataset]) -> None:
    config, ds = sliced
    setup = prepare_evaluation(ds, config)
    als = ALSFactors.fit(setup.train, config.models.als.model_copy(update={"factors": 32}))
    rows = np.arange(0, setup.train.n_users, 7)
    folded = als.fold_in(setup.train.user_items[rows])
    trained = als.user_factors[rows]
    cos = (folded * trained).sum(1) / (np.linalg.norm(folded, axis=1) * np.linalg.norm(trained, axis=1) + 1e-12)
    assert np.median(cos) > 0.98


def test_two_tower_and_merged_candidates_beat_their_parts(sliced: tuple[ProjectConfig, Dataset]) -> None:
    config, ds = sliced
    summary = run_retrieval(config, ds, track=False)
    test = {row["model"]: row for row in summary["test"]}
    sources = summary["candidates"]["sources"]
    assert summary["users"] > 150
    assert test["two_tower"]["recall@100"] > sources["popularity"]["recall@100"] + 0.05
    merged = summary["candidates"]["recall@100"]
    assert merged >= max(row["recall@100"] for row in sources.values()) - 0.005
    assert summary["candidates"]["recall@150"] >= merged
    assert summary["index"]["kind"] == "exact" and summary["index"]["ann_recall@100_vs_exact"] == pytest.approx(1.0)
    assert summary["two_tower"]["examples_per_second"] > 0
    # Scores come from the project's one metric implementation.
    setup = prepare_evaluation(ds, config)
    assert score_lists("x", {}, setup, config.evaluation).summary["recall@100"] == 0.0
