"""The two-tower: feature shapes, the KJT batch, the loss, cold items, determinism and save/load."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from features.content.standin import build_standin_vectors
from recsys.config import ProjectConfig, TwoTowerConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.models.als_factors import ALSFactors
from recsys.two_tower.batching import make_batch
from recsys.two_tower.features import build_item_table, inference_queries, training_examples, user_attributes
from recsys.two_tower.loss import log_sampling_probability, sampled_softmax_loss
from recsys.two_tower.model import TwoTower
from recsys.two_tower.recommender import TwoTowerRecommender
from tests.conftest import make_shop, shop_config, write_standin_vectors

SMALL = {"id_dim": 8, "category_dim": 4, "hidden": [16], "output_dim": 8, "batch_size": 32, "max_epochs": 3, "patience": 1, "validation_k": 10}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, TrainingData]:
    tmp = tmp_path_factory.mktemp("two_tower")
    config = shop_config(make_shop(tmp / "shop", n_users=60, n_items=30), tmp / "work", retrieval={"two_tower": SMALL})
    ds = load_dataset(config.data)
    write_standin_vectors(config, ds.items)
    split = split_by_time(ds.interactions, config.split)
    return config, TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start)


@pytest.fixture(scope="module")
def fitted(world: tuple[ProjectConfig, TrainingData]) -> TwoTowerRecommender:
    config, data = world
    return TwoTowerRecommender.from_config(config).fit(data)


def parts(config: ProjectConfig, data: TrainingData):  # noqa: ANN201 - test helper
    model = TwoTowerRecommender.from_config(config)
    vectors = build_standin_vectors(data.items, config.data.items.columns.text, 8)
    spec, items, als, attrs = model._prepare(data, vectors, None)
    return model, spec, items, als, attrs


def test_training_examples_see_only_the_past() -> None:
    import datetime as dt

    import polars as pl

    from recsys.config import ALSConfig
    from recsys.vectors import ItemVectors

    day = lambda d: dt.datetime(2024, 1, d)  # noqa: E731
    inter = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "item_id": ["x", "y", "z", "x", "y"],
            "timestamp": [day(1), day(2), day(3), day(1), day(1)],
            "weight": [1.0] * 5,
            "price": [1.0, 2.0, 3.0, 1.0, 2.0],
        }
    ).with_columns(pl.col("weight").cast(pl.Float32), pl.col("price").cast(pl.Float32))
    catalogue = pl.DataFrame({"item_id": ["x", "y", "z", "w"], "kind": ["k1", "k1", "k2", "k2"]})
    data = TrainingData.build(inter, catalogue, None, as_of=day(4))
    ids = np.asarray(["x", "y", "z", "w"])
    vec = np.eye(4, dtype=np.float32)
    vectors = ItemVectors(ids, np.zeros_like(vec), vec, vec, np.zeros(4, dtype=bool), "test")
    als = ALSFactors.fit(data, ALSConfig(factors=2, iterations=2, weighting="none"))
    items = build_item_table(data, vectors, als, ["kind"])
    queries, targets = training_examples(data, items, als, user_attributes(data, [], []), half_life=1.0, max_history=50)
    name = lambda rows: [str(ids[r]) for r in rows]  # noqa: E731
    got = {}
    for q in range(len(queries)):
        lo, hi = queries.hist_indptr[q], queries.hist_indptr[q + 1]
        user = str(data.user_index.ids[queries.user_rows[q]])
        got[(user, str(ids[targets[q]]))] = (name(queries.hist_items[lo:hi]), queries.hist_weights[lo:hi].tolist())
    # a's first purchase has no history (dropped); later targets see earlier and same-day items only.
    assert set(got) == {("a", "y"), ("a", "z"), ("b", "x"), ("b", "y")}
    assert got[("a", "y")] == (["x"], [1.0])
    hist, weights = got[("a", "z")]
    assert hist == ["y", "x"] and weights[0] == pytest.approx(2 / 3)  # half-life 1 day: y weighs twice x
    assert got[("b", "x")][0] == ["y"] and got[("b", "y")][0] == ["x"]
    # dense: ALS fold-in | content centroid | customer attributes | 2 history statistics
    assert queries.dense.shape[1] == als.dim + 4 + 1 + 2


def test_tower_shapes_and_kjt_batch(world: tuple[ProjectConfig, TrainingData]) -> None:
    config, data = world
    _, spec, items, als, attrs = parts(config, data)
    queries, targets = training_examples(data, items, als, attrs, 2.0, 50)
    idx = np.arange(6)
    extra = np.array([0, 1, 2, 3])
    batch = make_batch(spec, queries.subset(idx), items, np.concatenate([targets[idx], extra]))
    assert batch.features.keys() == spec.keys
    assert batch.features.stride() == 10  # rows = max(queries, items)
    lengths = batch.features.to_dict()
    assert lengths["user_id"].lengths()[6:].sum() == 0, "item-only rows carry no query"
    assert (lengths["cat_colour"].lengths() == 1).all()
    torch.manual_seed(0)
    tower = TwoTower(spec)
    users, cands = tower(batch.features, batch.user_dense, batch.item_dense)
    assert users.shape == cands.shape == (10, tower.output_dim)
    assert torch.isfinite(users).all() and torch.isfinite(cands).all()


def test_loss_applies_logq_and_masks_accidental_hits() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ids = torch.tensor([5, 6, 5])  # the third row repeats query 0's positive: not a negative
    loss = sampled_softmax_loss(users, items, ids, None, temperature=1.0)
    expected_0 = -torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[0]  # row 2 masked
    expected_1 = -torch.log_softmax(torch.tensor([0.0, 1.0, 0.0]), 0)[1]
    assert torch.isclose(loss, (expected_0 + expected_1) / 2)
    counts = torch.tensor([0.0] * 5 + [3.0, 1.0])
    log_q = log_sampling_probability(counts, ids, batch_size=2, extra=0, n_candidates=7)
    assert torch.allclose(log_q, torch.log(torch.tensor([1.5, 0.5, 1.5])))
    corrected = sampled_softmax_loss(users, items, ids, log_q, temperature=1.0)
    assert corrected > loss  # the popular positive of query 0 is discounted


def test_cold_items_get_vectors_from_content_and_metadata(fitted: TwoTowerRecommender, world: tuple[ProjectConfig, TrainingData]) -> None:
    from recsys.two_tower.train import item_vectors

    items = fitted.item_table
    assert items.known.any()
    # A cold twin of every known item: same metadata and content, no id, no ALS factors, no price.
    twin = type(items)(**{**items.__dict__})
    twin.known = np.zeros_like(items.known)
    content_dim = fitted.spec.content_dim
    twin.dense = items.dense.copy()
    twin.dense[:, content_dim:] = 0.0
    cold = item_vectors(fitted.tower, fitted.spec, twin)
    warm = fitted.item_vectors
    assert np.isfinite(cold).all() and (np.linalg.norm(cold, axis=1) > 0).all()
    # The twin lands closer to its own item than to the average other item.
    sims = (cold / np.linalg.norm(cold, axis=1, keepdims=True)) @ (warm / np.linalg.norm(warm, axis=1, keepdims=True)).T
    own = np.diag(sims)
    other = (sims.sum(axis=1) - own) / (len(own) - 1)
    assert (own > other).mean() > 0.9


def test_cold_item_ids_are_never_looked_up(world: tuple[ProjectConfig, TrainingData]) -> None:
    config, data = world
    _, spec, items, _, _ = parts(config, data)
    rows = np.arange(items.n_items)
    cold = make_batch(spec, None, items, rows, cold_dense=np.ones(items.n_items, dtype=bool))
    dense = cold.item_dense.numpy()
    assert np.all(dense[:, spec.content_dim :] == 0), "a simulated cold item loses ALS factors and price"
    np.testing.assert_array_equal(dense[:, : spec.content_dim], items.dense[:, : spec.content_dim])
    items.known[:] = False
    batch = make_batch(spec, None, items, rows)
    assert int(batch.features["item_id"].lengths().sum()) == 0


def test_fit_reports_training_and_validation(fitted: TwoTowerRecommender) -> None:
    assert fitted.validation_result is not None and fitted.train_result is not None
    v = fitted.validation_result
    assert 1 <= v.best_epoch <= v.epochs <= SMALL["max_epochs"]
    assert all(np.isfinite(h["loss"]) and h["examples_per_second"] > 0 for h in v.history)
    assert "val_recall_at_10" in v.history[0]
    assert fitted.train_result.epochs == v.best_epoch, "the refit runs the best epoch count"
    assert fitted.user_vectors.shape == (fitted.spec.n_users, fitted.tower.output_dim)


def test_training_leaves_no_in_backward_optimizer_behind(fitted: TwoTowerRecommender) -> None:
    """torch's in-backward optimizer registry kept every run's embedding tables alive (~0.9 GB per run at 100x)."""
    registry = importlib.import_module("torch.distributed.optim.apply_optimizer_in_backward")
    assert fitted.train_result is not None, "two training runs happened (early stopping, then the refit)"
    assert len(registry.param_to_acc_grad_map) == 0 and len(registry.param_to_optim_hook_handle_map) == 0


def test_save_load_round_trip(fitted: TwoTowerRecommender, world: tuple[ProjectConfig, TrainingData], tmp_path: Path) -> None:
    _, data = world
    users = data.user_index.ids[:8].tolist()
    loaded = TwoTowerRecommender.load(fitted.save(tmp_path / "tt"))
    assert loaded.recommend(users, 5).item_ids == fitted.recommend(users, 5).item_ids
    for key, value in fitted.tower.state_dict().items():
        assert torch.equal(value, loaded.tower.state_dict()[key]), key


def test_als_fold_in_matches_trained_user_factors(world: tuple[ProjectConfig, TrainingData], tmp_path: Path) -> None:
    config, data = world
    als = ALSFactors.fit(data, config.models.als.model_copy(update={"iterations": 15}))
    folded = als.fold_in(data.user_items)
    cos = (folded * als.user_factors).sum(1) / (np.linalg.norm(folded, axis=1) * np.linalg.norm(als.user_factors, axis=1) + 1e-12)
    assert np.median(cos) > 0.95
    again = ALSFactors.load(als.save(tmp_path / "als.npz"))
    np.testing.assert_array_equal(again.fold_in(data.user_items), folded)
    assert np.all(als.fold_in_items([["not-an-item"]]) == 0)


def test_user_attributes_mark_missing_customers(world: tuple[ProjectConfig, TrainingData]) -> None:
    _, data = world
    attrs = user_attributes(data, [], ["age"])
    assert attrs.shape == (data.n_users, 3)  # has-record flag, age, age-known flag
    assert set(np.unique(attrs[:, 0])) <= {0.0, 1.0}


def test_inference_queries_use_the_whole_history(world: tuple[ProjectConfig, TrainingData]) -> None:
    config, data = world
    _, _, items, als, attrs = parts(config, data)
    rows = np.arange(5)
    q = inference_queries(data, rows, items, als, attrs, 2.0, 50)
    for r in rows:
        bought = set(data.user_items[r].indices.tolist())
        assert set(q.hist_items[q.hist_indptr[r] : q.hist_indptr[r + 1]].tolist()) == bought


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        TwoTowerConfig(temperature=0)


def _reference_context(data: TrainingData, max_history: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The definition of a training query's history, as a plain (quadratic) self-join."""
    e = data.encoded.select("user_idx", "item_idx", pl.col("timestamp").dt.truncate("1d").alias("day"))
    targets = e.unique().sort(["day", "user_idx", "item_idx"]).with_columns(pl.int_range(pl.len()).alias("query"))
    pairs = targets.join(e.rename({"item_idx": "h_item", "day": "h_day"}), on="user_idx").filter(
        (pl.col("h_day") <= pl.col("day")) & ~((pl.col("h_item") == pl.col("item_idx")) & (pl.col("h_day") == pl.col("day")))
    )
    ctx = (
        pairs.with_columns(((pl.col("day") - pl.col("h_day")).dt.total_days()).alias("age"))
        .sort(["query", "age", "h_item"])
        .with_columns(pl.int_range(pl.len()).over("query").alias("r"))
        .filter(pl.col("r") < max_history)
    )
    return targets.filter(pl.col("query").is_in(ctx["query"].unique().implode())), ctx


@pytest.mark.parametrize("max_history", [3, 50])
def test_training_examples_windowed_equal_the_self_join_definition(max_history: int) -> None:
    """The windowed gather (linear in the log) gives exactly the queries of the quadratic definition,
    duplicates within a day and same-day targets included."""
    import datetime as dt

    from recsys.config import ALSConfig

    rng = np.random.default_rng(1)
    n = 2000
    inter = pl.DataFrame(
        {
            "user_id": [f"u{x}" for x in rng.integers(0, 30, n)],
            "item_id": [f"i{x}" for x in rng.integers(0, 40, n)],
            "timestamp": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=int(h)) for h in rng.integers(0, 24 * 15, n)],
            "weight": np.ones(n, np.float32),
        }
    ).sort("timestamp")
    items = pl.DataFrame({"item_id": [f"i{j}" for j in range(40)], "c": [str(j % 4) for j in range(40)]})
    data = TrainingData.build(inter, items, None, as_of=dt.datetime(2024, 1, 20))
    als = ALSFactors.fit(data, ALSConfig(factors=4, iterations=2))
    queries, targets = training_examples(data, build_item_table(data, None, als, ["c"]), als, user_attributes(data, [], []), 3.0, max_history)
    ref_targets, ref_ctx = _reference_context(data, max_history)
    np.testing.assert_array_equal(targets, ref_targets["item_idx"].to_numpy())
    np.testing.assert_array_equal(queries.user_rows, ref_targets["user_idx"].to_numpy())
    assert queries.hist_items.tolist() == ref_ctx["h_item"].to_list()
    # max_examples keeps the most recent purchases: the same queries as the tail of the full set.
    table = build_item_table(data, None, als, ["c"])
    recent, recent_targets = training_examples(data, table, als, user_attributes(data, [], []), 3.0, max_history, max_examples=500)
    assert 0 < len(recent_targets) <= 500
    np.testing.assert_array_equal(recent_targets, targets[-len(recent_targets):])
    np.testing.assert_array_equal(recent.user_rows, queries.user_rows[-len(recent_targets):])
    np.testing.assert_array_equal(recent.dense, queries.dense[-len(recent_targets):])


def test_big_windows_train_on_a_bounded_draw_per_epoch(world: tuple[ProjectConfig, TrainingData]) -> None:
    """epoch_examples caps each epoch's examples (a fresh draw each epoch); validation_users caps the early-stopping users."""
    config, data = world
    full = TwoTowerRecommender.from_config(config).fit(data)
    assert full.validation_result is not None and full.train_result is not None
    per_epoch = full.train_result.history[0]["examples"]
    assert per_epoch >= 64, "the shop must have a few batches of examples for this test"
    capped_config = config.retrieval.two_tower.model_copy(update={"epoch_examples": 64, "validation_users": 3})
    capped = TwoTowerRecommender(capped_config, config.models.als, full.features).fit(data)
    assert capped.validation_result is not None and capped.train_result is not None
    assert {h["examples"] for h in capped.train_result.history + capped.validation_result.history} == {64.0}
    assert len(capped.holdout_user_ids) == 3 < len(full.holdout_user_ids)
    assert capped.user_vectors.shape == full.user_vectors.shape, "every user still gets a vector"


def test_query_features_built_in_chunks_equal_one_product(world: tuple[ProjectConfig, TrainingData], monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense query features are written block by block (memory); every value is the one-shot formula's."""
    import scipy.sparse as sp

    from recsys.two_tower import features
    from recsys.vectors import l2_normalise

    config, data = world
    _, _, items, als, attrs = parts(config, data)
    rows = np.arange(data.n_users)
    whole = inference_queries(data, rows, items, als, attrs, 2.0, 50)
    monkeypatch.setattr(features, "CENTROID_CHUNK", 3)
    chunked = inference_queries(data, rows, items, als, attrs, 2.0, 50)
    assert np.array_equal(whole.dense, chunked.dense)
    owner = np.repeat(np.arange(len(rows)), np.diff(whole.hist_indptr))
    weighted = sp.csr_matrix((whole.hist_weights, (owner, whole.hist_items)), shape=(len(rows), items.n_items))
    a = als.item_factors.shape[1]
    dim = whole.dense.shape[1] - a - attrs.shape[1] - 2
    np.testing.assert_array_equal(chunked.dense[:, a : a + dim], l2_normalise(np.asarray(weighted @ items.dense[:, :dim])))
    np.testing.assert_array_equal(chunked.dense[:, :a], als.fold_in(sp.csr_matrix((np.ones(len(owner), np.float32), (owner, whole.hist_items)), shape=weighted.shape)))


def test_training_examples_built_in_chunks_equal_one_pass(world: tuple[ProjectConfig, TrainingData], monkeypatch: pytest.MonkeyPatch) -> None:
    """Examples are turned into queries QUERY_CHUNK targets at a time (memory: the 100x rung's
    history rows were ~12 GB at once); every query, history bag, weight and feature is the same."""
    from recsys.two_tower import features

    config, data = world
    _, _, items, als, attrs = parts(config, data)
    whole, targets = training_examples(data, items, als, attrs, 2.0, 50)
    monkeypatch.setattr(features, "QUERY_CHUNK", 7)
    monkeypatch.setattr(features, "EXAMPLE_CHUNK", 3)
    chunked, chunked_targets = training_examples(data, items, als, attrs, 2.0, 50)
    assert len(whole) > 3 * 7, "several chunks"
    np.testing.assert_array_equal(chunked_targets, targets)
    for field in ("user_rows", "hist_indptr", "hist_items", "hist_weights", "dense"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field), err_msg=field)


def test_a_large_training_set_stores_its_dense_features_in_half_precision(world: tuple[ProjectConfig, TrainingData], monkeypatch: pytest.MonkeyPatch) -> None:
    """Training examples above HALF_PRECISION_BYTES keep float16 features (5.3 GB -> 2.6 GB at 4M
    examples); they are the float32 values rounded, batches widen them back, and inference
    queries stay float32 at any size."""
    from recsys.two_tower import features

    config, data = world
    _, spec, items, als, attrs = parts(config, data)
    full, targets = training_examples(data, items, als, attrs, 2.0, 50)
    assert full.dense.dtype == np.float32
    monkeypatch.setattr(features, "HALF_PRECISION_BYTES", 0)
    half, half_targets = training_examples(data, items, als, attrs, 2.0, 50)
    assert half.dense.dtype == np.float16 and np.array_equal(targets, half_targets)
    np.testing.assert_array_equal(half.dense, full.dense.astype(np.float16))
    assert inference_queries(data, np.arange(data.n_users), items, als, attrs, 2.0, 50).dense.dtype == np.float32
    batch = make_batch(spec, half.subset(np.arange(4)), items, targets[:4])
    assert batch.user_dense.dtype == torch.float32
    np.testing.assert_array_equal(batch.user_dense[:4].numpy(), half.dense[:4].astype(np.float32))


def test_every_user_vector_built_in_chunks_equals_one_pass(fitted: TwoTowerRecommender, world: tuple[ProjectConfig, TrainingData], monkeypatch: pytest.MonkeyPatch) -> None:
    """fit() builds every user's query USER_CHUNK users at a time (memory: all 1.2M users' queries at
    once took the 100x rung from 12 to 20.4 GB); chunks of whole batches give the one-pass vectors."""
    from recsys.two_tower import recommender
    from recsys.two_tower.train import user_vectors

    config, data = world
    c, f = fitted.config, fitted.features
    attrs = user_attributes(data, f.user_categorical, f.user_numeric)
    every = np.arange(data.n_users, dtype=np.int64)
    queries = inference_queries(data, every, fitted.item_table, fitted.als, attrs, c.recency_half_life_days, c.max_history)
    one_pass = user_vectors(fitted.tower, fitted.spec, fitted.item_table, queries, batch_size=4)
    monkeypatch.setattr(recommender, "USER_BATCH", 4)
    monkeypatch.setattr(recommender, "USER_CHUNK", 8)
    chunked = fitted._every_user_vector(data, fitted.item_table, fitted.als, attrs)
    assert data.n_users > 3 * 8, "several chunks"
    np.testing.assert_array_equal(chunked, one_pass)
    np.testing.assert_allclose(fitted.user_vectors, one_pass, rtol=1e-5, atol=1e-6)  # the fit's own (batches of 4096)
    # Only some users' vectors (a label fold's label users): theirs are the same, the others zero.
    wanted = np.array([17, 3, 3, 9, 25, 0], dtype=np.int64)
    some = fitted._every_user_vector(data, fitted.item_table, fitted.als, attrs, wanted)
    others = np.setdiff1d(every, wanted)
    assert some.shape == one_pass.shape
    np.testing.assert_allclose(some[wanted], one_pass[wanted], rtol=1e-5, atol=1e-6)  # other batch neighbours: float rounding only
    assert not some[others].any()
    empty = fitted._every_user_vector(data, fitted.item_table, fitted.als, attrs, np.zeros(0, dtype=np.int64))
    assert empty.shape == one_pass.shape and not empty.any()
