"""Protects the A/B analysis helpers used by the notebooks (hand-checked on a tiny setup)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.config import ProjectConfig
from recsys.data import load_dataset
from recsys.evaluation.analysis import (
    activity_buckets,
    compare_table,
    item_segment_recall,
    recall_curve,
    user_segment_table,
    verdict,
)
from recsys.evaluation.protocol import evaluate_model, prepare_evaluation
from recsys.registry import build_model


@pytest.fixture
def evaluated(shop: tuple[Path, ProjectConfig]):
    _, config = shop
    setup = prepare_evaluation(load_dataset(config.data), config)
    a = evaluate_model(build_model("popularity", config), setup, config.evaluation)
    b = evaluate_model(build_model("history", config), setup, config.evaluation)
    return config, setup, a, b


def test_compare_table_and_verdict(evaluated) -> None:
    config, _, a, b = evaluated
    table = compare_table(a, b, ["map@5", "recall@10"], config.evaluation)
    row = table.row(0, named=True)
    assert row["popularity"] == pytest.approx(a.summary["map@5"]) and row["history"] == pytest.approx(b.summary["map@5"])
    assert row["diff"] == pytest.approx(b.summary["map@5"] - a.summary["map@5"])
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    text = verdict(table, "popularity", "history", "map@5")
    assert ("better" in text or "worse" in text or "No significant" in text) and f"{row['history']:.4f}" in text


def test_curves_and_segments(evaluated) -> None:
    _, setup, a, _ = evaluated
    user = setup.users[0]
    truth = setup.truth[user]
    recs = {user: list(truth)}
    curve = recall_curve(recs, setup, [1, len(truth)])
    assert curve[len(truth)] == pytest.approx(1 / len(setup.users))  # only one user has a perfect list
    seg = item_segment_recall(recs, setup, {truth[0]: "x"}, k=len(truth))
    x = seg.filter(pl.col("segment") == "x").row(0, named=True)
    assert x["users"] >= 1 and x["truth_items"] >= 1
    buckets = activity_buckets(setup)
    assert buckets.height == len(setup.users) and set(buckets["segment"]) <= {"1", "2-3", "4-7", "8+"}
    table = user_segment_table([a], buckets, "map@5")
    assert table["users"].sum() == len(setup.users)


def test_variants_from_model_and_saved_lists(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    from training.variants import resolve_variant, save_lists

    _, config = shop
    setup = prepare_evaluation(load_dataset(config.data), config)
    model = resolve_variant("model:history", config, setup)
    path = save_lists(model.recommendations, tmp_path / "lists.parquet")
    again = resolve_variant(f"lists:{path}", config, setup, name="saved")
    assert again.evaluation.summary == model.evaluation.summary
    with pytest.raises(ValueError, match="unknown variant kind"):
        resolve_variant("bogus:x", config, setup)


def test_variants_from_a_bundles_evaluated_lists(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    """`bundle:<list>[@<bundle>]` reads the lists a training run stored in its bundle."""
    from recsys.bundle import write_bundle
    from training.variants import EVALUATION_LISTS, resolve_variant, save_lists

    _, config = shop
    config = config.model_copy(update={"work_dir": str(tmp_path / "work")})
    setup = prepare_evaluation(load_dataset(config.data), config)
    model = resolve_variant("model:history", config, setup)
    bundle = write_bundle(config.work_path / "bundles", lambda d: save_lists(model.recommendations, d / EVALUATION_LISTS / "history.parquet"), {"project": "t"})
    latest = resolve_variant("bundle:history", config, setup)
    named = resolve_variant(f"bundle:history@{bundle.path}", config, setup)
    assert latest.name == "history" and named.name == f"history@{bundle.path.name}"
    assert latest.evaluation.summary == named.evaluation.summary == model.evaluation.summary
    with pytest.raises(ValueError, match="has no evaluated list 'reranked'; it has \\['history'\\]"):
        resolve_variant("bundle:reranked", config, setup)
    with pytest.raises(ValueError, match="mlflow:<run id>/<list name>"):
        resolve_variant("mlflow:abc", config, setup)
