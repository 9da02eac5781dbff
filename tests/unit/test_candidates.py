"""Candidate generation: the rank fusion by hand, weight tuning, every source, and the generator."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import merge, merge_user, tune_weights
from recsys.candidates.sources import history_rows, recent_items
from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.index.faiss_index import ItemIndex
from recsys.models.history import HistoryRecommender
from recsys.registry import build_model
from tests.conftest import make_shop, shop_config, write_standin_vectors

TWO_TOWER = {"id_dim": 8, "category_dim": 4, "hidden": [16], "output_dim": 8, "batch_size": 32, "max_epochs": 2, "validation_k": 10}


def test_merge_fuses_ranks_and_keeps_provenance() -> None:
    lists = {"history": ["a", "b"], "als": ["b", "c", "a"], "popularity": ["d"]}
    merged = merge_user(lists, size=10, weights={}, rrf_k=1.0)
    score = {c.item_id: c.score for c in merged}
    # b: 1/(1+2) + 1/(1+1); a: 1/(1+1) + 1/(1+3); c: 1/(1+2); d: 1/(1+1)
    assert score == pytest.approx({"b": 1 / 3 + 1 / 2, "a": 1 / 2 + 1 / 4, "c": 1 / 3, "d": 1 / 2})
    assert [c.item_id for c in merged] == ["b", "a", "d", "c"]
    b = merged[0]
    assert b.ranks == {"history": 2, "als": 1} and b.sources == ["als", "history"]


def test_merge_respects_size_weights_and_duplicates() -> None:
    lists = {"history": ["a", "a", "b"], "als": ["c", "d"]}
    merged = merge_user(lists, size=2, weights={"history": 0.0}, rrf_k=10.0)
    assert [c.item_id for c in merged] == ["c", "d"], "a zero-weight source only adds provenance"
    full = merge_user(lists, size=10, weights={"history": 0.0}, rrf_k=10.0)
    assert {c.item_id: c.ranks for c in full}["a"] == {"history": 1}, "a repeated item keeps its first rank"
    assert merge_user({}, 5, {}, 10.0) == []


def test_merge_is_deterministic_on_ties() -> None:
    lists = {"x": ["b", "a"], "y": ["a", "b"]}
    assert [c.item_id for c in merge_user(lists, 5, {}, 10.0)] == ["a", "b"]
    assert merge({"x": {"u": ["a"]}}, ["u", "v"], 5, {}, 10.0)["v"] == []


def test_tune_weights_finds_the_useful_source() -> None:
    truth = {f"u{i}": [f"good{i}"] for i in range(20)}
    lists = {
        "noise": {u: [f"noise{j}" for j in range(5)] for u in truth},
        "signal": {u: [f"x{j}" for j in range(4)] + truth[u] for u in truth},
    }
    base = np.mean([truth[u][0] in [c.item_id for c in merge_user({s: v[u] for s, v in lists.items()}, 5, {}, 10.0)] for u in truth])
    weights, recall = tune_weights(lists, truth, size=5, rrf_k=10.0, k=5)
    assert recall == pytest.approx(1.0) and recall > base
    assert weights["signal"] > weights["noise"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, TrainingData]:
    tmp = tmp_path_factory.mktemp("candidates")
    config = shop_config(
        make_shop(tmp / "shop", n_users=60, n_items=30), tmp / "work",
        retrieval={"two_tower": TWO_TOWER, "candidates": {"size": 20, "per_source": 10, "product_column": "product_type"}, "index": {"exact_max_items": 10}},
    )
    ds = load_dataset(config.data)
    write_standin_vectors(config, ds.items)
    split = split_by_time(ds.interactions, config.split)
    return config, TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start)


@pytest.fixture(scope="module")
def generator(world: tuple[ProjectConfig, TrainingData]) -> CandidateGenerator:
    config, data = world
    model = build_model("candidates", config)
    assert isinstance(model, CandidateGenerator)
    return model.fit(data)


def test_every_source_proposes_catalogue_items(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData]) -> None:
    _, data = world
    users = data.user_index.ids[:10].tolist()
    lists = generator.source_lists(users)
    assert set(lists) == {"history", "two_tower", "als", "copurchase", "content", "same_product", "popularity"}
    assert generator.tower_index.kind == "hnsw", "30 items > exact_max_items=10"
    for source, per_user in lists.items():
        assert set(per_user) == set(users)
        for items in per_user.values():
            assert len(items) <= 10 and len(set(items)) == len(items), source
            assert all(i in data.item_index for i in items)
        assert any(per_user.values()), f"{source} proposed nothing"


def test_index_sources_list_the_index_hits_as_catalogue_items(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData]) -> None:
    """The content index covers only the bought items, so its rows are not catalogue rows: the lists must be mapped, not reused."""
    _, data = world
    users = data.user_index.ids[:10].tolist()
    generator = copy.copy(generator)
    subset = np.arange(data.n_items)[::-1][: data.n_items - 5]  # other rows than the catalogue's, and not every item
    generator.content_index = ItemIndex.build(data.item_index.ids[subset], generator.content[subset], generator.index_config)
    lists = generator.source_lists(users)
    rows = generator.history.user_index.lookup(users)
    centroid = np.asarray(recent_items(generator.history, rows, generator.config.recent_items) @ generator.content, dtype=np.float32)
    centroid /= np.maximum(np.linalg.norm(centroid, axis=1, keepdims=True), 1e-12)
    assert [lists["content"][u] for u in users] == generator.content_index.search_ids(centroid, generator.config.per_source)
    towers = generator.two_tower.user_vectors[generator.two_tower.user_index.lookup(users)]
    assert [lists["two_tower"][u] for u in users] == generator.tower_index.search_ids(towers, generator.config.per_source)


def test_history_source_is_latest_first(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData]) -> None:
    _, data = world
    user = data.user_index.ids[0]
    e = data.encoded.filter(data.encoded["user_id"] == user)
    latest_day = e["timestamp"].max()
    latest = set(e.filter(e["timestamp"] == latest_day)["item_id"].to_list())
    listed = history_lists(generator.history, [user], 100)[user]
    assert set(listed) == set(e["item_id"].to_list())
    assert set(listed[: len(latest)]) == latest
    weights = recent_items(generator.history, np.asarray([0, -1]), 2)
    assert weights[0].nnz == min(2, len(listed)) and weights[1].nnz == 0


def test_same_product_proposes_unbought_variants_by_popularity(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData]) -> None:
    _, data = world
    user = data.user_index.ids[0]
    bought = set(history_lists(generator.history, [user], 100)[user])
    kind = dict(zip(data.items["item_id"].to_list(), data.items["product_type"].to_list()))
    proposed = src_same_product(generator, user)
    assert proposed and not bought.intersection(proposed)
    assert {kind[i] for i in proposed} <= {kind[i] for i in bought}
    latest_kind = kind[history_lists(generator.history, [user], 1)[user][0]]
    first_block = [i for i in proposed if kind[i] == latest_kind]
    pop = {i: generator.history.fallback_scores[data.item_index.get(i)] for i in first_block}
    assert proposed[: len(first_block)] == first_block, "the latest product's variants come first"
    assert all(pop[a] >= pop[b] for a, b in zip(first_block, first_block[1:]))


def src_same_product(generator: CandidateGenerator, user: str) -> list[str]:
    from recsys.candidates.sources import same_product_rows

    found = same_product_rows(generator.product_codes, generator.product_groups, generator.history, [user], 100)
    return found.to_id_lists([user], generator.history.item_index.ids)[user]


def history_lists(history: HistoryRecommender, users: list[str], k: int) -> dict[str, list[str]]:
    return history_rows(history, users, k).to_id_lists(users, history.item_index.ids)


def test_merged_candidates_cover_history_and_keep_ranks(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData]) -> None:
    _, data = world
    users = data.user_index.ids[:10].tolist()
    merged = generator.generate(users)
    hist = history_lists(generator.history, users, 100)
    for user in users:
        cands = merged[user]
        assert 0 < len(cands) <= 20
        assert all(c.ranks and all(r >= 1 for r in c.ranks.values()) for c in cands)
        assert all(a.score >= b.score for a, b in zip(cands, cands[1:]))
        ids = [c.item_id for c in cands]
        assert set(hist[user]) <= set(ids), "with equal weights every history item survives a 20-item merge"
    recs = generator.recommend(users, 5)
    assert recs.item_ids == [[c.item_id for c in merged[u][:5]] for u in users]


def test_save_load_round_trip(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData], tmp_path: Path) -> None:
    _, data = world
    users = data.user_index.ids[:8].tolist() + ["never-seen-user"]
    generator.weights = {"history": 2.0}
    loaded = CandidateGenerator.load(generator.save(tmp_path / "cands"))
    assert loaded.weights == {"history": 2.0}
    assert loaded.recommend(users, 10).item_ids == generator.recommend(users, 10).item_ids
    generator.weights = {}


def test_the_parts_of_a_loaded_generator_share_one_user_index(generator: CandidateGenerator, tmp_path: Path) -> None:
    """Each part saves the window's users; loaded, they hold one index (four 507 MB copies at the 100x rung)."""
    loaded = CandidateGenerator.load(generator.save(tmp_path / "cands"))
    parts = [getattr(loaded, name) for name in ("history", "als", "knn", "two_tower") if hasattr(loaded, name)]
    assert len(parts) >= 3
    assert all(part.user_index is parts[0].user_index for part in parts)
    assert all(part.item_index is parts[0].item_index for part in parts)
    assert parts[0].user_index.ids.tolist() == generator.history.user_index.ids.tolist()


def test_saved_indexes_are_loaded_not_rebuilt(generator: CandidateGenerator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading reads the saved FAISS indexes (a rebuilt HNSW graph costs ~40 s on the full catalogue)."""
    from recsys.index.faiss_index import ItemIndex

    path = generator.save(tmp_path / "cands")
    assert (path / "tower_index" / "index.faiss").is_file() and (path / "content_index" / "index.faiss").is_file()

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("index rebuilt on load")

    monkeypatch.setattr(ItemIndex, "build", no_build)
    loaded = CandidateGenerator.load(path)
    assert loaded.tower_index.item_ids.tolist() == generator.tower_index.item_ids.tolist()
    assert len(loaded.content_index) == len(generator.content_index)


def test_exact_indexes_are_rebuilt_on_load_not_saved(world: tuple[ProjectConfig, TrainingData], tmp_path: Path) -> None:
    """An exact index is a copy of vectors its model already saves (1.1 GB at the 100x rung): the
    generator leaves it out and a load rebuilds the same exact index, answering the same."""
    from recsys.config import IndexConfig

    config, data = world
    exact = CandidateGenerator(config.retrieval.candidates, IndexConfig(), config).fit(data)
    assert exact.tower_index.kind == "exact" and exact.content_index.kind == "exact"
    shared = exact.two_tower.item_vectors
    assert not shared.flags.writeable and shared.ctypes.data == exact.tower_index.stored_vectors().ctypes.data, "the tower reads the index's matrix: one copy"
    path = exact.save(tmp_path / "exact")
    assert not (path / "tower_index").exists() and not (path / "content_index").exists()
    loaded = CandidateGenerator.load(path)
    assert loaded.tower_index.kind == "exact" and loaded.content_index.kind == "exact"
    users = data.user_index.ids[:8].tolist()
    assert loaded.source_lists(users) == exact.source_lists(users)


def test_a_generator_loaded_as_memory_maps_answers_the_same(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded models map their large arrays from the file (shared by server workers); the batch,
    request and visitor paths (implicit's fold-in included) work on the maps and give the same lists."""
    from recsys.models import serialization

    _, data = world
    path = generator.save(tmp_path / "mapped")
    monkeypatch.setattr(serialization, "MMAP_MIN_BYTES", 0)  # every array mapped, however small
    loaded = CandidateGenerator.load(path)
    assert isinstance(loaded.two_tower.user_vectors.base, np.memmap) and isinstance(loaded.als.item_factors.base, np.memmap)
    users = data.user_index.ids[:30].tolist() + ["never-seen-user"]
    assert loaded.source_lists(users) == generator.source_lists(users), "a batch (screened searches included)"
    assert loaded.source_lists(users[:1]) == generator.source_lists(users[:1]), "a request's single user"
    visit = np.asarray([0, 3, 5])
    assert loaded.visitor_lists(visit) == generator.visitor_lists(visit)
    assert loaded.recommend(users, 10).item_ids == generator.recommend(users, 10).item_ids


def test_batches_screen_the_never_bought_items_once(generator: CandidateGenerator, world: tuple[ProjectConfig, TrainingData], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch (training folds, the precomputed table) asks the tower index to screen the items not
    bought in the window, once per index; a request's few users never pay for setting it up."""
    from recsys.index.faiss_index import EXACT_BATCH_MIN, ItemIndex

    _, data = world
    calls: list[tuple[np.ndarray, int]] = []
    monkeypatch.setattr(ItemIndex, "screen_cold", lambda self, warm, rank: calls.append((warm, rank)) or False)
    generator._screen_tried_for = None
    generator.source_lists(data.user_index.ids[:3].tolist())
    assert calls == [], "a request does not set up the screening"
    users = data.user_index.ids[:EXACT_BATCH_MIN].tolist()
    generator.source_lists(users)
    generator.source_lists(users)
    assert len(calls) == 1, "set up once per index"
    warm, rank = calls[0]
    bought = set(data.item_index.ids[np.unique(data.user_items.indices)].tolist())
    assert warm.tolist() == [item in bought for item in generator.tower_index.item_ids.tolist()]
    assert rank == generator.index_config.screen_rank
