"""The ``aligned`` backend end to end on a slice of the real H&M catalogue, with the real towers.

Loads all-MiniLM-L6-v2 and EfficientNet-Lite0 from their wheels (offline), trains heads for a
few epochs on ~60 photos, writes item vectors, and checks that serving-time encoding (a fresh
encoder loaded from the saved heads) reproduces the pipeline's vectors.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from features.content.backends import build_encoder
from features.content.search import ContentSearch
from recsys.config import ProjectConfig, deep_merge
from recsys.data import Dataset, load_dataset
from recsys.vectors import ItemVectors
from training.content import run_content

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TYPES = ["Dress", "Trousers", "Sweater"]


@pytest.fixture(scope="module")
def hm_slice(hm_config: ProjectConfig) -> tuple[ProjectConfig, Dataset]:
    dataset = load_dataset(hm_config.data)
    items = dataset.items
    photos = items.filter(pl.col("has_image") & pl.col("product_type_name").is_in(TYPES))
    picked = pl.concat([photos.filter(pl.col("product_type_name") == t).head(20) for t in TYPES])
    no_photo = items.filter(~pl.col("has_image")).head(10)
    small = pl.concat([picked, no_photo])
    raw = deep_merge(
        hm_config.model_dump(mode="json"),
        {"content": {"alignment": {"epochs": 3, "batch_size": 16, "holdout_share": 0.3, "validation_share": 0.15, "dim": 32, "hidden": 64},
                     "evaluation": {"retrieval_items": 10, "zero_shot_types": 3}}},
    )
    return ProjectConfig.model_validate(raw), dataclasses.replace(dataset, items=small)


def test_aligned_pipeline_on_real_towers(hm_slice: tuple[ProjectConfig, Dataset]) -> None:
    config, dataset = hm_slice
    result = run_content(config, dataset, progress=False)
    vectors = ItemVectors.load(result.vectors_path)
    assert vectors.item_ids.tolist() == dataset.items["item_id"].to_list() and vectors.dim == 32
    assert int(vectors.has_image.sum()) == 60
    np.testing.assert_allclose(np.linalg.norm(vectors.text, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors.fused, axis=1), 1, atol=1e-5)
    assert not vectors.image[~vectors.has_image].any()
    np.testing.assert_allclose(vectors.fused[~vectors.has_image], vectors.text[~vectors.has_image], atol=1e-6)
    # Held-out evaluation ran and the heads were saved with their manifest and MLflow run.
    assert 0 <= result.metrics["t2i_recall@10"] <= 1 and result.metrics["zero_shot_items"] > 0
    manifest = json.loads((result.heads_dir / "manifest.json").read_text())
    assert manifest["backbones"]["image"].startswith("efficientnet-lite0:") and manifest["mlflow_run_id"] == result.run_id
    # Serving-time encoding from the saved heads gives the pipeline's vectors.
    encoder = build_encoder(config.content, config.work_path)
    assert encoder.identity == vectors.encoder
    rows = np.flatnonzero(vectors.has_image)[:3]
    again = encoder.encode_images([dataset.images.path_for(i) for i in vectors.item_ids[rows]], progress=False)
    np.testing.assert_allclose(again, vectors.image[rows], atol=1e-5)
    search = ContentSearch(vectors, encoder, config.content.search)
    hits = search.search(text="dress", k=5, require_image=True)
    assert len(hits.item_ids) == 5 and all(vectors.has_image[vectors.index.get(i)] for i in hits.item_ids)
    assert search.similar_items(str(vectors.item_ids[0]), k=3).item_ids


def test_frozen_towers_see_product_types(hm_slice: tuple[ProjectConfig, Dataset]) -> None:
    """Without any training, the pretrained towers already separate product types a little."""
    config, dataset = hm_slice
    from features.content.aligned import Backbones

    backbones = Backbones(config.content, cache_root=None)
    photos = dataset.items.filter(pl.col("has_image"))
    types = photos["product_type_name"].to_numpy()
    feats = backbones.images([dataset.images.path_for(i) for i in photos["item_id"].to_list()], progress=False)
    assert feats.shape == (60, 1280) and feats.dtype == np.float32
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sims = f @ f.T
    np.fill_diagonal(sims, -np.inf)
    nearest_same_type = np.mean(types[sims.argmax(1)] == types)
    assert nearest_same_type > 0.6  # chance is 1/3
    text = backbones.texts(["a red dress", "a summer dress", "grey wool trousers"], progress=False)
    assert text.shape == (3, 384) and text[0] @ text[1] > text[0] @ text[2]
    # Item texts in parts: the normalised sum of the parts' features, empty parts left out.
    items = backbones.item_texts([["a red dress", ""], ["Dress. Ladieswear", "grey wool trousers"]], progress=False)
    both = text[0] + backbones.texts(["Dress. Ladieswear"], progress=False)[0]
    np.testing.assert_allclose(items[0], both / np.linalg.norm(both), atol=1e-5)
    np.testing.assert_allclose(items[1], text[2], atol=1e-5)
