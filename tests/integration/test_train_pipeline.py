"""`recsys train` end to end on the small H&M slice: bundle, MLflow run, the evaluation table,
stage reuse on a re-run, and feature parity between the training path and the serving path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import PROJECT_ROOT, load_config

# The first test pays for training the small bundle (~5-8 min cold on 2 cores, content features included).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def trained(small_bundle: Path) -> Path:
    return small_bundle


def test_bundle_and_table(trained: Path) -> None:
    from recsys.bundle import load_bundle

    bundle = load_bundle(trained)
    m = bundle.manifest
    assert m["mlflow_run_id"] and m["data_fingerprint"] and "torch" in m["packages"]
    for part in ("generator/model.json", "ranker/ranker.txt", "item_vectors.npz", "data/history.parquet", "config.json"):
        assert part in m["files"], part
    table = pl.read_parquet(bundle.file("evaluation.parquet"))
    assert set(table["model"]) >= {"popularity", "history", "als", "content", "two_tower", "candidates", "reranked"}
    lift = json.loads(bundle.file("lift.json").read_text())
    assert lift["best_single_source"] in {"popularity", "history", "als", "content", "two_tower"}
    assert "evaluation_lists/reranked.parquet" in m["files"]  # offline A/B variants read these


def test_run_tree_and_registered_model(trained: Path) -> None:
    """One parent run with a child run per stage, and the bundle registered as a model version."""
    import mlflow
    from mlflow import MlflowClient

    from recsys.bundle import load_bundle
    from training.tracking import configure

    bundle = load_bundle(trained)
    config = load_config(PROJECT_ROOT / "configs" / "hm_small.yaml")
    configure(config)
    client = MlflowClient()
    parent = client.get_run(bundle.manifest["mlflow_run_id"])
    children = mlflow.search_runs(experiment_ids=[parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list")
    assert {c.data.tags.get("stage") for c in children} >= {"content", "label_fold", "label_fold_2", "reranker", "serving_fold", "evaluate"}
    assert "reranked.map_at_12" in parent.data.metrics
    versions = client.search_model_versions(f"name = '{config.name}-recommender'")
    mine = [v for v in versions if v.tags.get("bundle_version") == bundle.version]
    assert mine and mine[0].run_id == parent.info.run_id and mine[0].source == trained.resolve().as_uri()


def test_rerun_reuses_every_stage(trained: Path) -> None:
    env = {**os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--config", "configs/hm_small.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reused stages: content, label_fold, label_fold_2, reranker, serving_fold, evaluate" in proc.stdout


def test_serving_path_features_equal_training_path(trained: Path) -> None:
    from features.ranking import user_states
    from features.ranking_examples import (
        build_examples,
        feature_builder,
        user_attribute_columns,
        user_vectors,
    )
    from recsys.candidates.generator import CandidateGenerator
    from recsys.index.faiss_index import EXACT_BATCH_MIN
    from serving.bundle_service import BundleService

    service = BundleService.load(trained)
    config = load_config(PROJECT_ROOT / "configs" / "hm_small.yaml")
    # Training path: exactly what the evaluate stage does for a test user.
    data = service.data
    generator = CandidateGenerator.load(trained / "generator")
    # A batch, as the evaluate stage and the precomputed table make them (a batch is searched exactly:
    # ItemIndex.search_exact), so the served candidates are the same lists.
    users = data.user_index.ids[:EXACT_BATCH_MIN].tolist()
    candidates = generator.generate(users)
    from recsys.vectors import ItemVectors

    features = feature_builder(config, data, generator, ItemVectors.load(trained / "item_vectors.npz"))
    states = user_states(data, users, user_attribute_columns(config), user_vectors(generator, users))
    offline = build_examples(features, states, candidates, data.item_index, features.sources)
    # Serving path: the service's own feature computation for the same users and candidates.
    start = 0
    for user, size in zip(offline.user_ids, offline.groups):
        online = service.feature_rows(user, [c.item_id for c in candidates[user]])
        np.testing.assert_array_equal(online, offline.features[start : start + size])
        start += size


def test_visitor_words_drive_the_reranked_list(trained: Path) -> None:
    """A visitor known only by words gets items matching them, not the popular list: the search hits
    stand in for a history in the ranking features (without them every similarity feature is empty)."""
    from serving.bundle_service import BundleService
    from serving.service import Query

    service = BundleService.load(trained)
    types = dict(zip(service.data.items["item_id"].to_list(), service.data.items["product_type_name"].to_list()))
    recs = service.recommendations(Query(text="red dress", k=12))
    assert len(recs) == 12
    assert sum("content" in r.reasons.sources for r in recs) >= 6
    assert sum(types[r.item_id] == "Dress" for r in recs) >= 4
    assert all("history" not in r.reasons.sources for r in recs)  # the stand-in history is never a source
