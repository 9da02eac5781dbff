"""Protects the reranker features: hand-checked values, and identical rows whichever path computes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.ranking import (
    MISSING,
    CandidateSet,
    RankingFeatures,
    UserStateLookup,
    anonymous_state,
    build_item_table,
    user_states,
)
from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.vectors import ItemVectors, l2_normalise


@pytest.fixture
def setup(shop: tuple[Path, ProjectConfig]) -> tuple[TrainingData, RankingFeatures, ItemVectors]:
    _, config = shop
    ds = load_dataset(config.data)
    split = split_by_time(ds.interactions, config.split)
    data = TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start)
    rng = np.random.default_rng(0)
    ids = ds.items["item_id"].to_numpy().astype(str)
    has = ds.items["has_image"].to_numpy()
    text = l2_normalise(rng.normal(size=(len(ids), 8)).astype(np.float32))
    image = l2_normalise(rng.normal(size=(len(ids), 8)).astype(np.float32)) * has[:, None]
    vectors = ItemVectors(ids, image, text, l2_normalise(text + image), has, "test")
    factors = {"als": rng.normal(size=(data.n_items, 4)).astype(np.float32)}
    table = build_item_table(data, ["product_type", "colour"], vectors, factors)
    feats = RankingFeatures(table, {}, ["age"], ["history", "als"])
    return data, feats, vectors


def _candidates(data: TrainingData, user: str, n: int = 6) -> CandidateSet:
    rows = np.arange(n, dtype=np.int64)
    ranks = {"history": np.where(rows % 2 == 0, rows // 2, -1), "als": rows.copy()}
    scores = {"merged": np.linspace(1, 0, n)}
    return CandidateSet(rows, ranks, scores)


def test_hand_checked_values(setup: tuple[TrainingData, RankingFeatures, ItemVectors]) -> None:
    data, feats, vectors = setup
    user = data.user_index.ids[0]
    state = user_states(data, [user], ["age"], {"als": {user: np.ones(4, dtype=np.float32)}})[0]
    cand = _candidates(data, user)
    x = feats.compute([state], [cand])
    col = {n: x[:, i] for i, n in enumerate(feats.feature_names)}
    assert x.shape == (6, len(feats.feature_names))
    hist = state.item_rows
    for j, row in enumerate(cand.item_rows):
        assert col["hist_item_count"][j] == np.sum(hist == row)
        # the text similarity to the last purchase is a plain dot product
        assert col["sim_text_last"][j] == pytest.approx(float(vectors.text[row] @ vectors.text[hist[-1]]), abs=1e-5)
        assert col["score_als"][j] == pytest.approx(float(feats.items.factors["als"][row].sum()), abs=1e-4)
    codes = feats.items.categorical["colour"]
    expected = np.mean(codes[hist] == codes[cand.item_rows[0]])
    assert col["affinity_colour"][0] == pytest.approx(expected)
    assert np.isnan(col["src_history_rank"][1]) and col["src_history_rank"][2] == 1
    assert col["src_count"].tolist() == [2, 1, 2, 1, 2, 1]
    assert col["src_merged_score"][0] == 1.0
    assert col["user_n_purchases"][0] == len(hist)
    age = data.users.filter(data.users["user_id"] == user)["age"].item()  # type: ignore[union-attr]
    assert col["user_age"][0] == age
    # items without a photo have no image similarity (missing, not zero)
    no_image = ~feats.items.has_image[cand.item_rows]
    assert np.isnan(col["sim_image_centroid"][no_image]).all()


def test_batch_and_single_user_paths_are_identical(setup: tuple[TrainingData, RankingFeatures, ItemVectors]) -> None:
    data, feats, _ = setup
    users = data.user_index.ids[:8].tolist()
    states = user_states(data, users, ["age"])
    cands = [_candidates(data, u) for u in users]
    batch = feats.compute(states, cands)
    for i, u in enumerate(users):
        single = feats.compute(user_states(data, [u], ["age"]), [_candidates(data, u)])
        np.testing.assert_array_equal(single, batch[i * 6 : (i + 1) * 6])


def test_serving_state_lookup_equals_user_states(setup: tuple[TrainingData, RankingFeatures, ItemVectors]) -> None:
    """The server's precomputed per-user states are exactly the training path's (every user, an unknown one)."""
    data, feats, _ = setup
    lookup = UserStateLookup(data, ["age"])
    users = data.user_index.ids.tolist() + ["nobody"]
    vec = {"als": {u: np.full(4, i, dtype=np.float32) for i, u in enumerate(users[:5])}}
    for u, expected in zip(users, user_states(data, users, ["age"], vec)):
        got = lookup.state(u, {m: v[u] for m, v in vec.items() if u in v})
        assert got.user_id == expected.user_id and got.attributes == expected.attributes
        for field in ("item_rows", "days_ago", "prices"):
            a, b = getattr(got, field), getattr(expected, field)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert got.vectors.keys() == expected.vectors.keys()
        np.testing.assert_array_equal(feats.compute([got], [_candidates(data, u)]), feats.compute([expected], [_candidates(data, u)]))


def test_anonymous_visitor_gets_features(setup: tuple[TrainingData, RankingFeatures, ItemVectors]) -> None:
    data, feats, _ = setup
    x = feats.compute([anonymous_state([3, 4])], [_candidates(data, "")])
    col = {n: x[:, i] for i, n in enumerate(feats.feature_names)}
    assert col["hist_item_count"][3] == 1 and col["hist_item_count"][0] == 0
    assert np.isnan(col["score_als"]).all()  # no user vector for a visitor unless one is folded in
    empty = feats.compute([anonymous_state([])], [_candidates(data, "")])
    assert np.isnan(empty[:, feats.feature_names.index("sim_fused_centroid")]).all()


class _Unreadable(np.ndarray):
    """A matrix that fails the test when any value of it is read (gathered, reduced or compared)."""

    def __getitem__(self, key: object) -> None:
        raise AssertionError("a text-only catalogue's image matrix was read")

    def __array_ufunc__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a text-only catalogue's image matrix was read")


def test_a_text_only_catalogue_never_reads_its_image_matrix(setup: tuple[TrainingData, RankingFeatures, ItemVectors]) -> None:
    # Its image rows are all zero; reading them mapped 634 MB per stage at the 100x rung for nothing.
    data, _, vectors = setup
    n = len(vectors.item_ids)
    text_only = ItemVectors(vectors.item_ids, np.zeros_like(vectors.image).view(_Unreadable), vectors.text, vectors.text, np.zeros(n, dtype=bool), "test")
    table = build_item_table(data, ["product_type", "colour"], text_only, {})
    assert not table.has_image.any()
    feats = RankingFeatures(table, {}, ["age"], ["history"])
    user = data.user_index.ids[0]
    x = feats.compute(user_states(data, [user], ["age"], {}), [_candidates(data, user)])
    names = feats.feature_names
    image = x[:, [names.index(f"sim_image_{s}") for s in ("centroid", "last", "max_recent")]]
    assert np.all(np.isnan(image)) and np.isnan(MISSING), "no photographed item: the image similarities are missing"


def test_has_image_comes_from_the_stored_flags(setup: tuple[TrainingData, RankingFeatures, ItemVectors]) -> None:
    data, _, vectors = setup
    table = build_item_table(data, ["product_type", "colour"], vectors, {})
    expected = np.asarray([bool(vectors.image[vectors.index.lookup([i])[0]].any()) for i in data.item_index.ids])
    assert np.array_equal(table.has_image, expected) and expected.any() and not expected.all()
