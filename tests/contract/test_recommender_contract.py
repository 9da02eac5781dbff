"""The contract every recommender in the registry honours (after implicit's shared test mixin).

Each model registered in ``recsys.registry.MODEL_FACTORIES`` is fitted on the synthetic shop and
checked for: top-k shape and order, catalogue ids only, unknown users answered (not raised),
seen-item exclusion, determinism, and a pickle-free save/load round trip that reproduces the
recommendations exactly. A new model gets all of this by registering itself.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.models import Recommender
from recsys.registry import MODEL_CLASSES, MODEL_FACTORIES, build_model
from recsys.vectors import ItemVectors, l2_normalise
from tests.conftest import make_shop, shop_config

K = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, TrainingData]:
    """Synthetic shop + training window; content vectors at the agreed work-dir location for content-based models."""
    tmp = tmp_path_factory.mktemp("contract")
    config = shop_config(make_shop(tmp / "shop"), tmp / "work")
    ds = load_dataset(config.data)
    split = split_by_time(ds.interactions, config.split)
    data = TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start)
    rng = np.random.default_rng(0)
    ids = ds.items["item_id"].to_numpy().astype(str)
    text = l2_normalise(rng.normal(size=(len(ids), 16)).astype(np.float32))
    has = ds.items["has_image"].to_numpy()
    image = l2_normalise(rng.normal(size=(len(ids), 16)).astype(np.float32)) * has[:, None]
    ItemVectors(ids, image, text, l2_normalise(text + image), has, "contract-random").save(config.work_path / "content" / "item_vectors.npz")
    return config, data


@pytest.fixture(params=sorted(MODEL_FACTORIES))
def fitted(request: pytest.FixtureRequest, world: tuple[ProjectConfig, TrainingData]) -> tuple[str, Recommender, TrainingData]:
    config, data = world
    model = build_model(request.param, config)
    assert model.fit(data) is model, "fit must return self"
    return request.param, model, data


def test_recommend_returns_ranked_catalogue_items(fitted: tuple[str, Recommender, TrainingData]) -> None:
    _, model, data = fitted
    users = data.user_index.ids[:10].tolist()
    recs = model.recommend(users, K)
    assert recs.user_ids == users and len(recs.item_ids) == len(users)
    for items, scores in zip(recs.item_ids, recs.scores):
        assert 0 < len(items) <= K
        assert len(set(items)) == len(items), "no duplicates in a list"
        assert all(i in data.item_index for i in items)
        assert len(scores) == len(items) and all(a >= b for a, b in zip(scores, scores[1:])), "best first"


def test_unknown_users_are_answered_not_raised(fitted: tuple[str, Recommender, TrainingData]) -> None:
    _, model, _ = fitted
    recs = model.recommend(["never-seen-user"], K)
    assert len(recs.item_ids[0]) <= K  # a fallback list (possibly empty), never an exception


def test_exclude_seen_removes_training_items(fitted: tuple[str, Recommender, TrainingData]) -> None:
    _, model, data = fitted
    users = data.user_index.ids[:10].tolist()
    recs = model.recommend(users, K, exclude_seen=True)
    for user, items in zip(users, recs.item_ids):
        row = data.user_index.get(user)
        assert row is not None
        seen = set(data.item_index.ids[data.user_items[row].indices].tolist())
        assert not seen.intersection(items)


def test_invalid_k_is_rejected(fitted: tuple[str, Recommender, TrainingData]) -> None:
    _, model, data = fitted
    with pytest.raises(ValueError):
        model.recommend(data.user_index.ids[:1].tolist(), 0)


def test_fit_is_deterministic(fitted: tuple[str, Recommender, TrainingData], world: tuple[ProjectConfig, TrainingData]) -> None:
    name, model, data = fitted
    config, _ = world
    users = data.user_index.ids[:10].tolist()
    again = build_model(name, config).fit(data)
    assert again.recommend(users, K).item_ids == model.recommend(users, K).item_ids


def test_save_load_round_trip_without_pickle(fitted: tuple[str, Recommender, TrainingData], tmp_path: Path) -> None:
    _, model, data = fitted
    users = data.user_index.ids[:10].tolist() + ["never-seen-user"]
    path = model.save(tmp_path / "model")
    meta = json.loads((path / "model.json").read_text())
    assert meta["class"] == model.name
    for npz in path.glob("*.npz"):
        with zipfile.ZipFile(npz) as z:
            for member in z.namelist():
                with z.open(member) as f:
                    assert np.lib.format.read_array(f, allow_pickle=False) is not None
    loaded = MODEL_CLASSES[model.name].load(path)
    before, after = model.recommend(users, K), loaded.recommend(users, K)
    assert after.item_ids == before.item_ids
    np.testing.assert_allclose(np.concatenate(after.scores), np.concatenate(before.scores), rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob(".model*")), "no temp dirs left behind"


def test_scoring_blocks_shrink_over_a_big_catalogue_without_changing_lists(world: tuple[ProjectConfig, TrainingData], monkeypatch: pytest.MonkeyPatch) -> None:
    """A block of users x items is capped by SCORE_BLOCK_FLOATS (memory at 600k items), and the lists do not depend on it."""
    import recsys.models.base as base

    config, data = world
    model = build_model("history", config).fit(data)
    assert isinstance(model, base.ScoringRecommender)
    users = data.user_index.ids[:10].tolist()
    before = model.recommend(users, K, exclude_seen=True)
    sizes: list[int] = []
    score_users = model.score_users
    monkeypatch.setattr(model, "score_users", lambda rows: sizes.append(len(rows)) or score_users(rows))
    monkeypatch.setattr(base, "SCORE_BLOCK_FLOATS", 3 * data.n_items)
    after = model.recommend(users, K, exclude_seen=True)
    assert sizes == [3, 3, 3, 1], "three users a block"
    assert after.item_ids == before.item_ids and after.scores == before.scores
